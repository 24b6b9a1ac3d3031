# Copy to instance/config.py and edit. Keys are the TSD_* settings without the prefix;
# environment variables override this file.

# A key of 64 random hex characters: python -c 'import secrets; print(secrets.token_hex(32))'
# (the placeholder is refused in production: too short to be a key).
# SECRET_KEY = "replace-with-64-hex-characters"
# DATABASE_URL = "postgresql+psycopg2://tsd:PASSWORD@127.0.0.1/tsd"

# Behind one reverse proxy (nginx, Caddy) on the same machine:
# PROXY_FIX_X_FOR = 1
# PROXY_FIX_X_PROTO = 1
# TRUSTED_PROXIES = "127.0.0.1/32, ::1/128"

# One LAN, no proxy: private addresses count as households.
# IP_MATCH_ALLOW_PRIVATE = True
