"""HTTP plumbing shared by the box's servers and its clients."""
