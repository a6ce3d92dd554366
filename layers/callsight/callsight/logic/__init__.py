"""Domain logic: what each process does, independent of Lambda and HTTP."""
