"""poolwarden: keeps a pool of browser-based AI accelerators serving through failure."""
