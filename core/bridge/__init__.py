"""The bridge between Python and worker pages: the wire protocol and the WebSocket server."""
