"""Fleet keys, broker configuration, node configs, Raspberry Pi OS images and flashing."""
