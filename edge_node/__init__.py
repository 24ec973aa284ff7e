"""The Raspberry Pi program: camera, face clips in SQLite, real-time IFER/VFER, nightly personalization, federation client, kiosk page."""
