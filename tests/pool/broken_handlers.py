"""A handler module that cannot be imported: its children cannot boot."""

raise RuntimeError("this handler module is broken on purpose")
