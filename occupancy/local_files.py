"""What a deployment keeps in its data dir: the secret, the bootstrap admin key, Redis's port,
and the folders of the embedded Redis, ClickHouse and HAProxy."""

from pathlib import Path

import redis

from access.auth import KeyStore, key_hash, key_id
from access.keyring import SECRET_FILE_ENV, BadSecret, check_secret, read_secret_file
from clickhouse.backends import CHDB_SUBDIR
from observability.audit import recorded
from occupancy.settings import Settings
from state import redis_client
from state.private_files import generated_once, write_private
from state.redis_server import SUBDIR as REDIS_SUBDIR
from state.redis_server import EmbeddedRedis, password_of, url_of

HAPROXY_SUBDIR = "haproxy-run"
SECRET_FILE = "secret"
WORKDIR = "ray-workdir"  # empty: the working directory Ray's local workers get
# the folders' names before: each was also the name of a package (`redis`, `clickhouse`), which a
# data dir used as the working directory put in front of the real one
_RENAMED = {"redis": REDIS_SUBDIR, "clickhouse": CHDB_SUBDIR, "haproxy": HAPROXY_SUBDIR}


def rename_old_folders(data_dir: Path) -> list[str]:
    """Give the folders of a data dir made by an earlier version their current names (not while
    an embedded Redis runs from the old one); the names renamed."""
    renamed = []
    for old, new in _RENAMED.items():
        source, target = data_dir / old, data_dir / new
        if not source.is_dir() or target.exists():
            continue
        if old == "redis" and (source / "redis.port").exists():
            continue  # a server may be running from it: it keeps its folder until it stops
        source.rename(target)
        renamed.append(old)
    return renamed


def secret(settings: Settings) -> bytes:
    """OCC_SECRET, else the file named by OCC_SECRET_FILE, else the one generated on first use
    and kept (0600) in the data dir. Raises keyring.BadSecret for a placeholder, a secret
    shorter than 32 bytes, or both variables set."""
    if settings.secret and settings.secret_file:
        raise BadSecret("set OCC_SECRET or OCC_SECRET_FILE, not both")
    if settings.secret:
        return check_secret(settings.secret.get_secret_value().encode(), "OCC_SECRET")
    if settings.secret_file:
        path = Path(settings.secret_file)
        return check_secret(read_secret_file(path), f"OCC_SECRET_FILE ({path})")
    path = generated_once(settings.data_dir / SECRET_FILE, 32)
    return check_secret(read_secret_file(path), str(path))


def secret_for_actors(settings: Settings) -> dict[str, str]:
    """Where the engine's actors find the secret, as variables of the job's runtime env: the
    path of a 0600 file, never the secret itself (Ray shows runtime envs in its dashboard).
    Empty when it is OCC_SECRET: that is in the environment of `ray start` (the raylet a local
    `occupancy up` starts inherits it)."""
    if settings.secret_file:
        return {SECRET_FILE_ENV: str(Path(settings.secret_file).resolve())}
    if settings.secret:
        return {}
    return {SECRET_FILE_ENV: str((settings.data_dir / SECRET_FILE).resolve())}


class KeyFile:
    """A key kept in a file only its owner reads (0600)."""

    def __init__(self, path: Path):
        self.path = path

    def where(self) -> str:
        return f"{self.path} (0600; `cat` it)"

    def read(self) -> str | None:
        return self.path.read_text().strip() if self.path.exists() else None

    def write(self, key: str) -> None:
        write_private(self.path, key + "\n")


def key_store(settings: Settings, role: str = "admin"):
    """Where the bootstrap key of `role` is kept: the Kubernetes Secret OCC_ADMIN_KEY_SECRET
    names for the admin key, else `<data dir>/<role>.key`. Either has `where`, `read` and
    `write`; never a log or the output."""
    if role == "admin" and settings.admin_key_secret:
        from occupancy.kube_secret import KubeSecret

        return KubeSecret(settings.admin_key_secret)
    return KeyFile(settings.data_dir / f"{role}.key")


def bootstrap_key(settings: Settings, client: redis.Redis, role: str = "admin", store=None) -> str:
    """A key with `role` kept in `store` (key_store's by default): the admin key `occupancy up`
    says where to find, the viewer key of the demo's page. Made once, and again if revoked; a
    key that could not be stored is revoked at once (nobody could use it)."""
    store = store or key_store(settings, role)
    keys = KeyStore(client)
    key = store.read()
    if key and keys.role(key) == role:
        return key
    with recorded(client, "keys create", role=role, label="bootstrap") as params:
        key = keys.create(role, "bootstrap")
        params["id"] = key_id(key_hash(key))
    try:
        store.write(key)
    except BaseException:
        keys.revoke(key)
        raise
    return key


class RedisFor:
    """A Redis client for CLI commands: OCC_REDIS_URL, or the embedded server of the data dir
    (started for the command and stopped after it if `occupancy up` is not running)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.embedded: EmbeddedRedis | None = None

    def __enter__(self) -> redis.Redis:
        if self.settings.redis_url:
            return redis_client.connect(self.settings.redis_url)
        self.embedded = EmbeddedRedis(self.settings.data_dir)
        return redis_client.connect(self.embedded.start())

    def __exit__(self, *exc) -> None:
        if self.embedded is not None:
            self.embedded.stop()


def running_redis_url(settings: Settings) -> str:
    """The URL of the embedded Redis that `occupancy up` started from this data dir."""
    port_file = settings.data_dir / REDIS_SUBDIR / "redis.port"
    if not port_file.exists():
        raise RuntimeError(f"no embedded Redis running from {settings.data_dir}; set OCC_REDIS_URL")
    return url_of(int(port_file.read_text()), password_of(settings.data_dir / REDIS_SUBDIR))
