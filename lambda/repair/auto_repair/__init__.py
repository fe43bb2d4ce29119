"""The auto-repair control plane: signals in, observe / reboot / replace out, within safety limits."""
