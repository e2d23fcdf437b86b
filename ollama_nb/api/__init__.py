"""API types shared by the manager, the server, the client, magics and plots."""
