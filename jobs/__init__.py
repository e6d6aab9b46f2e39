"""Jobs, schedules, sensors, the command line, and the code location (definitions)."""
