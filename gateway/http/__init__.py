"""The HTTP front and back: listener, proxying to the origin, upstream clients, WebSocket,
header rules and bounded reads of request bodies."""
