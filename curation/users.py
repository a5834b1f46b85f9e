"""Console users: creating, listing and editing them, and checking a login.

Passwords are hashed with Werkzeug's ``generate_password_hash`` (scrypt); the
password itself is never stored nor logged. Failed attempts are counted on the
user (``failed_logins``, for the record) but lock nothing: a stored lock-out
would let anyone who knows an e-mail address lock its owner out. Guessing is
slowed by the login limits instead (`curation.login_limits`: per client, per
account and per both, in short windows).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from models.curation import ROLES, User
from models.entities import utcnow

log = logging.getLogger("parley.users")

MIN_PASSWORD_LENGTH = 10
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# Checked when the e-mail is unknown, so that both cases take the same time.
_DUMMY_HASH = generate_password_hash("not-a-password")


#: The PostgreSQL advisory lock key that serialises first-admin setups (any fixed bigint).
FIRST_ADMIN_LOCK = 0x7061726C6579_01  # "parley", 1


class UserError(ValueError):
    """A user cannot be created as asked; the message says why."""


class SetupClosed(Exception):
    """A console user exists already: the first admin is made once, by one request."""


@dataclass(frozen=True)
class LoginResult:
    """The outcome of a login attempt.

    Attributes:
        user: The user, when the login succeeded.
        error: Why it failed, fit to show (never says whether the e-mail exists).
    """

    user: User | None
    error: str | None = None


MAX_NAME_LENGTH = 100


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}: use one of {', '.join(ROLES)}")


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")


def _clean_name(name: str | None) -> str | None:
    name = " ".join((name or "").split())
    if len(name) > MAX_NAME_LENGTH:
        raise UserError(f"the name must be at most {MAX_NAME_LENGTH} characters")
    return name or None


def create_user(
    session: Session, email: str, password: str, role: str, name: str | None = None
) -> User:
    """Add a console user; the caller commits.

    Args:
        session: The SQLAlchemy session.
        email: The login name (stored lower-cased).
        password: At least `MIN_PASSWORD_LENGTH` characters; only its hash is stored.
        role: One of `models.curation.ROLES`.
        name: How the console shows the user (optional).

    Raises:
        UserError: a malformed e-mail, an unknown role, a password shorter than
            `MIN_PASSWORD_LENGTH`, a name too long, or an e-mail already taken.
    """
    email = email.strip().lower()
    if not _EMAIL.match(email):
        raise UserError(f"{email!r} is not an e-mail address")
    _check_role(role)
    _check_password(password)
    clean_name = _clean_name(name)
    if session.scalar(sa.select(User.id).where(User.email == email)) is not None:
        raise UserError(f"a user {email} already exists")
    user = User(
        email=email, name=clean_name, password_hash=generate_password_hash(password), role=role
    )
    session.add(user)
    session.flush()
    return user


def has_users(session: Session) -> bool:
    """Whether any console user exists (active or not)."""
    return session.scalar(sa.select(User.id).limit(1)) is not None


def create_first_admin(session: Session, email: str, password: str) -> User:
    """Create the first admin, unless a user exists; race-free across processes.

    Checking "no user yet" and inserting happen under one lock held to the end
    of the caller's transaction, so of any number of simultaneous setups one
    creates the admin and the others see it: on PostgreSQL a transaction-scoped
    advisory lock (``pg_advisory_xact_lock``, released by the commit or
    rollback); on SQLite the write lock that every transaction of this app
    takes at its start (``BEGIN IMMEDIATE``, `models.init_db`). The caller
    commits.

    Args:
        session: The session whose transaction holds the lock until it ends.
        email: The admin's e-mail address.
        password: The admin's password (at least `MIN_PASSWORD_LENGTH` characters).

    Returns:
        The new admin, flushed.

    Raises:
        SetupClosed: a console user exists already.
        UserError: the e-mail or password is not acceptable (see `create_user`).
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(FIRST_ADMIN_LOCK)))
    elif dialect != "sqlite":
        raise NotImplementedError(f"no first-admin lock for {dialect}: use SQLite or PostgreSQL")
    if has_users(session):
        raise SetupClosed("a console user exists already: use flask users create")
    return create_user(session, email, password, "admin")


def list_users(session: Session) -> list[User]:
    """Every console user, by e-mail."""
    return list(session.scalars(sa.select(User).order_by(User.email)))


def get_user(session: Session, user_id: int) -> User:
    """One console user.

    Raises:
        UserError: there is no such user.
    """
    user = session.get(User, user_id)
    if user is None:
        raise UserError(f"no user {user_id}")
    return user


def _other_active_admins(session: Session, user_id: int) -> int:
    return (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(User)
            .where(User.role == "admin", User.active.is_(True), User.id != user_id)
        )
        or 0
    )


def update_user(
    session: Session, user_id: int, *, name: str | None, role: str, active: bool, by: int
) -> User:
    """Change a user's name, role and whether they may log in; the caller commits.

    Args:
        session: The SQLAlchemy session.
        user_id: The user to change.
        name: Their display name (empty: none).
        role: Their new role.
        active: False disables the account: its sessions end at their next request.
        by: The id of the admin making the change.

    Raises:
        UserError: no such user, an unknown role, an admin disabling or demoting
            themselves, or a change that would leave no active admin.
    """
    user = get_user(session, user_id)
    _check_role(role)
    clean_name = _clean_name(name)
    if user_id == by and (not active or role != "admin"):
        raise UserError("you cannot disable your own account or take away your own admin role")
    loses_admin = user.role == "admin" and user.active and (role != "admin" or not active)
    if loses_admin and _other_active_admins(session, user_id) == 0:
        raise UserError("at least one active admin must remain")
    user.name, user.role, user.active = clean_name, role, active
    log.info("admin.user.updated user=%s role=%s active=%s by=%s", user.id, role, active, by)
    return user


def set_password(session: Session, user_id: int, password: str) -> User:
    """Give a user a new password and lift any lock-out; the caller commits.

    Raises:
        UserError: no such user, or a password shorter than `MIN_PASSWORD_LENGTH`.
    """
    user = get_user(session, user_id)
    _check_password(password)
    user.password_hash = generate_password_hash(password)
    user.failed_logins = 0
    user.locked_until = None
    log.info("admin.user.password_reset user=%s", user.id)
    return user


def display_names(session: Session) -> dict[int, str]:
    """Each user's id and how the console shows them (name, else e-mail)."""
    return {
        user_id: name or email
        for user_id, name, email in session.execute(sa.select(User.id, User.name, User.email))
    }


def active_users(session: Session, excluding: int | None = None) -> list[User]:
    """Users who may log in, by name or e-mail (e.g. whom to transfer a conversation to)."""
    query = sa.select(User).where(User.active.is_(True))
    if excluding is not None:
        query = query.where(User.id != excluding)
    return sorted(session.scalars(query), key=lambda user: user.display_name.lower())


def authenticate(session: Session, email: str, password: str) -> LoginResult:
    """Check an e-mail and password, counting failures on the user.

    The caller commits (failed attempts are stored too).
    """
    email = email.strip().lower()
    user = session.scalars(sa.select(User).where(User.email == email)).first()
    if user is None or not user.active:
        check_password_hash(_DUMMY_HASH, password)
        return LoginResult(None, "Wrong e-mail or password.")
    if not check_password_hash(user.password_hash, password):
        user.failed_logins = (user.failed_logins or 0) + 1
        log.warning("admin.login.failed user=%s failures=%s", user.id, user.failed_logins)
        return LoginResult(None, "Wrong e-mail or password.")
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = utcnow()
    return LoginResult(user)


def has_users_if_readable(session: Session) -> bool | None:
    """`has_users`, or None when the users cannot be read (the database is not migrated).

    Ends the session's transaction.
    """
    try:
        return has_users(session)
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        session.rollback()
