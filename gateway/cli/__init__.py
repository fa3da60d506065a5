"""The `popgate` command: `run`, `verify SCHEME`, `keys generate`, `demo-upstream`."""
