"""The admin API (`/admin/...`): operate a running hub over HTTP; the CLI is its client."""

from hookhub.admin.app import admin_route, create_admin_app

__all__ = ["admin_route", "create_admin_app"]
