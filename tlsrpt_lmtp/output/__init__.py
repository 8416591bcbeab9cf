"""Where events go: the renderer chain (JSON lines, ECS, syslog) and its writers."""
