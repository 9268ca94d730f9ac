"""Store port and its adapters: SQLite (the embedded default) and PostgreSQL."""

from __future__ import annotations

# Key records are the crypto package's (it parses and verifies them); the
# store keeps them, and re-exports them as part of its port's vocabulary.
from ..crypto import KeyUpload as KeyUpload
from ..crypto import OneTimePrekey as OneTimePrekey
from ..crypto import SignedPrekey as SignedPrekey
from ._migrations import LATEST_VERSION as LATEST_VERSION
from ._migrations import DownNotConfirmed as DownNotConfirmed
from ._migrations import Migrated as Migrated
from ._migrations import SchemaVersionError as SchemaVersionError
from ._port import Bundle as Bundle
from ._port import Device as Device
from ._port import Enqueued as Enqueued
from ._port import KeyIdReused as KeyIdReused
from ._port import NewMessage as NewMessage
from ._port import Outgoing as Outgoing
from ._port import PrekeyStatus as PrekeyStatus
from ._port import PutKeysResult as PutKeysResult
from ._port import QueuedMessage as QueuedMessage
from ._port import QueueFull as QueueFull
from ._port import QueueLimits as QueueLimits
from ._port import RefreshOutcome as RefreshOutcome
from ._port import RefreshResult as RefreshResult
from ._port import SendResult as SendResult
from ._port import Session as Session
from ._port import Store as Store
from ._port import StoreError as StoreError
from ._port import StoreUnavailable as StoreUnavailable
from ._port import Unroutable as Unroutable
from ._port import User as User
from ._port import UsernameTaken as UsernameTaken
from ._port import UserSummary as UserSummary
from ._postgres import PostgresStore as PostgresStore
from ._postgres import describe_dsn as describe_dsn
from ._postgres import migrate_postgres as migrate_postgres
from ._postgres import open_postgres_store as open_postgres_store
from ._routing import route as route
from ._sqlite import SQLiteStore as SQLiteStore
from ._sqlite import migrate_sqlite as migrate_sqlite
from ._sqlite import open_sqlite_store as open_sqlite_store
