"""Package data: the worker page (index.html, worker.js) the bridge serves to browsers."""
