"""Security headers on every response, and the session cookie's attributes.

Headers come from Flask-Talisman: a Content-Security-Policy that allows only
this site's own scripts, styles, images and connections, with no inline script,
inline style attribute or framing (``frame-ancestors 'none'`` and
``X-Frame-Options: DENY``: the console's publish and erase buttons are one click,
so no other site may frame them); ``X-Content-Type-Options: nosniff``;
``Referrer-Policy: strict-origin-when-cross-origin``; HSTS on https requests.
(OWASP Secure Headers Project; MDN, "Content Security Policy".) Inline
``<style>`` blocks carry the request's nonce (``csp_nonce()`` in templates).

HTTPS is not forced here: TLS ends at the host's proxy, and Twilio and Stripe
call the https URL they were given.

The session cookie is ``HttpOnly`` and ``SameSite=Lax``, and ``Secure`` when the
request came over https (``request.is_secure``) or, outside development, when
``PUBLIC_BASE_URL`` is https (behind a proxy that terminates TLS, the app sees
http).
"""

from __future__ import annotations

from flask import Flask, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from flask_talisman import Talisman

#: The Content-Security-Policy of every response (Talisman's format: directive -> sources).
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "connect-src": "'self'",
    "font-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with ``Secure`` on every https request too."""

    def get_cookie_secure(self, app: Flask) -> bool:
        """``SESSION_COOKIE_SECURE``, or True for a request that came over https."""
        return super().get_cookie_secure(app) or (has_request_context() and request.is_secure)


def init_app(app: Flask) -> None:
    """Add the security headers and set the session cookie's attributes."""
    public_base_url = app.extensions["parley"].settings.public_base_url
    https = str(public_base_url or "").lower().startswith("https://")
    secure = https and not app.config.get("DEVELOPMENT")
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SECURE"] = secure
    app.config["REMEMBER_COOKIE_SAMESITE"] = "Lax"  # Flask-Login's "remember me"
    app.config["REMEMBER_COOKIE_HTTPONLY"] = True
    app.config["REMEMBER_COOKIE_SECURE"] = secure
    app.session_interface = _SessionInterface()
    Talisman(
        app,
        force_https=False,
        frame_options="DENY",
        content_security_policy=CONTENT_SECURITY_POLICY,
        content_security_policy_nonce_in=["style-src"],
        referrer_policy="strict-origin-when-cross-origin",
        session_cookie_secure=False,  # set above, from PUBLIC_BASE_URL and the request
        session_cookie_samesite="Lax",
        session_cookie_http_only=True,
    )
