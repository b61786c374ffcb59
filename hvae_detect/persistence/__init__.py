"""Writing and reading what outlives a process: atomic files and folders, model folders."""
