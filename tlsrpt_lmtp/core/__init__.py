"""The pure core: functions over bytes and values (no sockets, no clock, no globals)."""
