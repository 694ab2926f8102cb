"""The in-process broker of embedded mode (`stepflow.adapters.embedded`): the broker ports'
semantics without RabbitMQ. A regular package, so import analysis (`lint-imports`) sees it."""
