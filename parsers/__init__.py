"""Pure parsers: source bytes in, standard-schema conversations out. Imports nothing from sync_workers."""
