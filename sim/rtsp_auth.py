"""Basic or Digest login on every mount of a simulated camera's GStreamer RTSP server.

Shared by sim/camera.py and sim/mp2p.py (run as a script): `--auth basic|digest` with
`--user`/`--password` makes every mount ask for these credentials.
"""
import gi

gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GstRtsp, GstRtspServer  # noqa: E402


def setup_auth(server, a):
    """Sets the server's auth; returns the permissions each factory needs (the role the
    token carries), or None without --auth."""
    if not a.auth:
        return None
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "user")
    if a.auth == "basic":
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
    else:
        auth.add_digest(a.user, a.password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role("user", "media.factory.access", True)
    permissions.add_permission_for_role("user", "media.factory.construct", True)
    return permissions
