"""Payment provider adapters behind one protocol (:mod:`.base`)."""
