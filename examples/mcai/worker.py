"""An ordinary Media Cloud AI worker, written against mcai-worker-sdk 2.1.1 and nothing else:
it knows nothing of stepflow. It upper-cases its `message` parameter.

A few messages do something else, to show how stepflow sees a worker's ways to end a job:
- "fail" raises: the job errors, and the error text is "RuntimeError: ...";
- "sleepN" (N seconds, may be fractional) works for N seconds, looking every 0.1 s whether
  it was asked to stop (`channel.is_stopped()`); a stopped job answers "STOPPED".

Outputs are `string` kinds: with this SDK, the Python binding sends only string,
array_of_strings and "true"/"false" booleans; other kinds reach the backend as null.

Run it with the current directory set to this folder (the SDK reads ./pyproject.toml); the
README beside it lists the environment.
"""

import time

import mcai_worker_sdk as mcai


class UpperParameters(mcai.WorkerParameters):
    message: str


class UpperWorker(mcai.Worker):
    def process(self, channel, parameters, job_id):
        message = parameters.message
        channel.publish_job_progression(10)
        if message == "fail":
            raise RuntimeError(f"cannot upper-case {message!r} (job {job_id})")
        if message.startswith("sleep"):
            seconds = float(message[len("sleep"):] or 1)
            for _ in range(int(seconds * 10)):
                if channel.is_stopped():
                    return {"destination_paths": [],
                            "parameters": [{"id": "upper", "kind": "string", "value": "STOPPED"}]}
                time.sleep(0.1)
        channel.publish_job_progression(100)
        return {"destination_paths": [],
                "parameters": [{"id": "upper", "kind": "string", "value": message.upper()}]}


if __name__ == "__main__":
    UpperWorker(UpperParameters, mcai.WorkerDescription(__package__)).start()
