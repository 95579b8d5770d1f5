"""The worker UI's page and static assets, served by actors/worker/ui.py."""
