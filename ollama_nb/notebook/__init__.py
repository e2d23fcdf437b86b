"""The notebook faces: magics, widgets, display, the connection to a model server, sessions."""
