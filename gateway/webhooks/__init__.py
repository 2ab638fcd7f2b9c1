"""Webhooks in (vendors calling us) and out (us calling partners): gateway/webhooks/service.py."""
