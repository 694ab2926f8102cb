from stepflow.adapters.cli import entry

entry()
