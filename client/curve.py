"""CurveZMQ (required whenever the daemon listens beyond loopback): key pairs and socket options."""
from __future__ import annotations

from pathlib import Path

import zmq

from .connection import ensure_private_dir, write_private_file

ZAP_DOMAIN = "unimoe-audio"

def _load_or_create_keypair(folder: Path, name: str) -> tuple[bytes, bytes]:
    folder = ensure_private_dir(Path(folder))
    pub_path, sec_path = folder / f"{name}.public", folder / f"{name}.secret"
    if pub_path.is_file() and sec_path.is_file():
        return pub_path.read_bytes().strip(), sec_path.read_bytes().strip()
    public, secret = zmq.curve_keypair()
    write_private_file(sec_path, secret)
    write_private_file(pub_path, public)
    return public, secret


def server_keypair(config_dir: Path) -> tuple[bytes, bytes]:
    """The daemon's CurveZMQ key pair (Z85), kept in ``<config>/curve`` (user-only) so that it survives
    reboots: workstations' profiles name its public key."""
    return _load_or_create_keypair(Path(config_dir) / "curve", "server")


def client_keypair(config_dir: Path) -> tuple[bytes, bytes]:
    """This machine's client key pair (Z85), kept in ``<config>/curve``; add the public key to curve_allow."""
    return _load_or_create_keypair(Path(config_dir) / "curve", "client")


def curve_server(sock: zmq.Socket, secret: bytes) -> None:
    sock.curve_server = True
    sock.curve_secretkey = secret
    sock.zap_domain = ZAP_DOMAIN.encode()


def curve_client(sock: zmq.Socket, server_public: bytes, public: bytes, secret: bytes) -> None:
    sock.curve_serverkey = server_public
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def is_loopback_host(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")
