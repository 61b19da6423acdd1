"""How a task is evaluated; one small module per protocol."""
