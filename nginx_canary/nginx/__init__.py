"""The config engine: nginx's config as a model, in-place edits, the split arithmetic, the transaction (snapshot, write, test, reload, verify, restore) and talking to nginx."""
