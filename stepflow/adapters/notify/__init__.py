"""Outbound HTTP the backend makes itself: notification steps and workflow hooks.

Standard library only, and no dependency on the HTTP API (`stepflow.adapters.http`), so a
backend without `--http` carries none of it.
"""
