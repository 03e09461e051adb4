"""``security.redact_secrets``: precision and recall on a labelled set, and what it costs a backfill.

    python bench/redaction.py [--cost-mb 20] [--show]

1. A labelled set (``cases()``): real-looking secrets in the contexts a transcript holds them (a shell
   command, code, a config file, prose, a tool's output), built from the formats the providers
   document and their public example keys (AWS's ``AKIAIOSFODNN7EXAMPLE``, jwt.io's token) with random
   bodies, passwords both random and of the word-and-digits kind people pick, in ``.env`` files,
   ``export`` and ``docker run -e`` lines and prose; and look-alikes that must stay (git hashes, UUIDs,
   checksums, lockfile hashes, public keys, base64 images in code, templated and indirect passwords,
   ``.env`` settings named like secrets, prose about passwords, URLs without credentials). A case is
   caught when the planted secret is gone from the redacted text, a false alarm when a look-alike's
   text changed.
2. Cost: a generated Claude Code corpus (``bench/corpus.py``) parsed once, then every message encoded
   as the worker does (``encode_message``) with redaction off and on, best of ``--runs``.
"""

from __future__ import annotations

import argparse
import base64
import random
import string
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from sync_workers.redaction import Redactor

ALNUM = string.ascii_letters + string.digits


def _r(rng: random.Random, n: int, chars: str = ALNUM) -> str:
    return "".join(rng.choice(chars) for _ in range(n))


def _pem(rng: random.Random, kind: str) -> str:
    body = base64.b64encode(rng.randbytes(600)).decode()
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN {kind}-----\n{lines}\n-----END {kind}-----"


def _jwt(rng: random.Random) -> str:
    def seg(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")
    payload = f'{{"sub":"{rng.randint(1, 10**9)}","name":"{_r(rng, 8)}","iat":{rng.randint(10**9, 2 * 10**9)}}}'
    return seg(b'{"alg":"HS256","typ":"JWT"}') + "." + seg(payload.encode()) + "." + seg(rng.randbytes(32))


_WORDS = ("summer", "dragon", "falcon", "sunshine", "pepper", "orange", "winter", "hunter", "tiger", "harbor")
_LEET = str.maketrans({"o": "0", "a": "4", "e": "3", "i": "1", "s": "5"})


def _human_password(rng: random.Random) -> str:
    """A password as people pick them (``Falcon2024!``, ``hunter2xyz``, ``Tr0ub4dor&3``): low entropy, so
    no entropy rule finds it; only the word naming it does."""
    word = rng.choice(_WORDS)
    word = word.capitalize() if rng.random() < 0.5 else word
    word = word.translate(_LEET) if rng.random() < 0.3 else word
    tail = rng.choice([str(rng.randint(1990, 2030)), str(rng.randint(1, 99)), _r(rng, 3, string.ascii_lowercase)])
    return word + str(rng.randint(0, 9)) + tail + rng.choice(["", "", "!", "#", "@", "*"])


def positives(rng: random.Random) -> list[tuple[str, str, str]]:
    """(label, text, the secret planted in it)."""
    hexl = string.hexdigits[:16]
    made = {
        "aws access key id": lambda: "AKIA" + _r(rng, 16, string.ascii_uppercase + string.digits),
        "aws example key id": lambda: "AKIAIOSFODNN7EXAMPLE",
        "github pat": lambda: "ghp_" + _r(rng, 36),
        "github oauth": lambda: "gho_" + _r(rng, 36),
        "gitlab pat": lambda: "glpat-" + _r(rng, 20, ALNUM + "_-"),
        "slack bot token": lambda: f"xoxb-{rng.randint(10**11, 10**12)}-{rng.randint(10**12, 10**13)}-"
                                   + _r(rng, 24, string.ascii_lowercase + string.digits),
        "stripe live key": lambda: "sk_live_" + _r(rng, 24),
        "openai project key": lambda: "sk-proj-" + _r(rng, 74, ALNUM + "_-") + "T3BlbkFJ" + _r(rng, 74, ALNUM + "_-"),
        "openai legacy key": lambda: "sk-" + _r(rng, 20) + "T3BlbkFJ" + _r(rng, 20),
        "sendgrid key": lambda: "SG." + _r(rng, 22, ALNUM + "_-") + "." + _r(rng, 43, ALNUM + "_-"),
        "pypi token": lambda: "pypi-AgEIcHlwaS5vcmc" + _r(rng, 80, ALNUM + "_-"),
        "twilio api key": lambda: "SK" + _r(rng, 32, hexl),
        "jwt": lambda: _jwt(rng),
        "telegram bot token": lambda: f"{rng.randint(10**8, 10**9)}:" + _r(rng, 35, ALNUM + "_-"),
        "azure storage key": lambda: "AccountKey=" + base64.b64encode(rng.randbytes(66)).decode(),
        "anthropic key": lambda: "sk-ant-api03-" + _r(rng, 93, ALNUM + "_-") + "AA",
        "anthropic admin key": lambda: "sk-ant-admin01-" + _r(rng, 93, ALNUM + "_-") + "AA",
        "google api key": lambda: "AIza" + _r(rng, 35, ALNUM + "_-"),
        "hugging face token": lambda: "hf_" + _r(rng, 34, string.ascii_letters),
        "github fine-grained pat": lambda: "github_pat_" + _r(rng, 22) + "_" + _r(rng, 59),
        "npm token": lambda: "npm_" + _r(rng, 36),
    }
    contexts = [
        "Run this: `curl -H 'Authorization: Bearer {s}' https://api.example.com/v1/me`",
        "export API_TOKEN={s}\nnpm run deploy",
        "I pasted my key by mistake, it is {s} -- please ignore it",
        "$ cat .env\nNODE_ENV=production\nSERVICE_CREDENTIAL={s}\nPORT=8080",
        "client = Client(\"{s}\")\nresult = client.list()",
        "Here is the key from the console:\n\n{s}\n\nCan you set it up?",
    ]
    out = []
    for label, make in made.items():
        for context in contexts:
            secret = make()
            out.append((label, context.format(s=secret), secret.removeprefix("AccountKey=")))
    for _ in range(4):
        pw = _r(rng, rng.randint(10, 20), ALNUM + "!#%&*+-")
        out.append(("password in python", f'db = connect(host="db", user="app")\npassword = "{pw}"\n', pw))
        out.append(("password in json", f'{{"user": "app", "password": "{pw}", "port": 5432}}', pw))
        out.append(("password in yaml, quoted", f"database:\n  user: app\n  password: '{pw}'\n", pw))
        url_pw = _r(rng, rng.randint(10, 20), ALNUM + "-._~")  # a URL's password has its other characters %-encoded
        out.append(("password in a url", f"DATABASE_URL=postgres://app:{url_pw}@db.internal:5432/app", url_pw))
        key = _r(rng, 32)
        out.append(("api_key in js", f"const api_key = '{key}';", key))
        out.append(("password in .env, unquoted", f"DB_USER=app\nDB_PASSWORD={pw}\n", pw))
        out.append(("password in prose", f"the staging password is {pw} until Friday", pw))
        human = _human_password(rng)
        out.append(("password in .env, unquoted", f"$ cat .env\nDATABASE_HOST=db\nDATABASE_PASSWORD={human}\n", human))
        human = _human_password(rng)
        out.append(("password in export", f"export PGPASSWORD={human}\npsql -h db -U app", human))
        human = _human_password(rng)
        out.append(("password in docker run", f"docker run -d -e POSTGRES_PASSWORD={human} -p 5432:5432 postgres:16",
                    human))
        human = _human_password(rng)
        out.append(("password in prose", f"My VPN password is {human} if you need to get in.", human))
        human = _human_password(rng)
        out.append(("password in prose", f"I reset the root password to {human}, can you update the config?", human))
        human = _human_password(rng)
        out.append(("password in prose", f"the password for the staging db is {human}", human))
        token = _r(rng, 40)
        out.append(("token in .env, unquoted", f"export API_TOKEN={token}\nnpm run deploy", token))
        token = _r(rng, 32, hexl)
        out.append(("token in .env, unquoted", f"SERVICE_AUTH_TOKEN={token}\nLOG_LEVEL=info", token))
    for kind in ("RSA PRIVATE KEY", "OPENSSH PRIVATE KEY", "PRIVATE KEY", "EC PRIVATE KEY"):
        pem = _pem(rng, kind)
        out.append(("private key", f"$ cat ~/.ssh/id_test\n{pem}\n$ ", pem.splitlines()[3]))
    return out


def negatives(rng: random.Random) -> list[tuple[str, str]]:
    """(label, text) that holds no secret."""
    hexl = "0123456789abcdef"
    out = []
    for _ in range(4):
        sha = _r(rng, 40, hexl)
        uuid = _uuid(rng)
        out += [
            ("git log", f"commit {sha}\nAuthor: Dev <dev@example.com>\n\n    fix the batch size"),
            ("uuid", f'{{"sessionId": "{uuid}", "type": "user"}}'),
            ("sha256", f"sha256:{_r(rng, 64, hexl)}  dist/app.tar.gz"),
            ("npm integrity", f'"integrity": "sha512-{base64.b64encode(rng.randbytes(64)).decode()}"'),
            ("base64 image", f"data:image/png;base64,{base64.b64encode(rng.randbytes(300)).decode()}"),
            ("docker digest", f"image: ghcr.io/org/app@sha256:{_r(rng, 64, hexl)}"),
            ("public key", f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{_r(rng, 43)} dev@laptop"),
            ("pem public key", _pem(rng, "PUBLIC KEY")),
            ("certificate", _pem(rng, "CERTIFICATE")),
        ]
    out += [
        ("password from env", 'password = os.environ["DB_PASSWORD"]\nconn = connect(password=password)'),
        ("password templated", "database:\n  password: ${DB_PASSWORD}\n"),
        ("password placeholder", 'password = "<your password>"'),
        ("password getter", "api_key = settings.get_key()\nsecret = vault.read('app/secret')"),
        ("password compare", "if password == confirm_password:\n    save(user)"),
        ("password prompt", 'password = getpass.getpass("Password: ")'),
        ("password empty", 'password = ""'),
        ("password null", "password: null\nkey_file: null"),
        ("key names", '{"api_key_header": "X-Api-Key", "token_type": "Bearer"}'),
        ("constants", "PASSWORD_MIN_LENGTH = 8\nMAX_KEYS = 100\nSECRET_ROTATION_DAYS = 30"),
        ("prose", "Rotate the secret key every month and never commit passwords; the key manager keeps them."),
        ("url without credentials", "git clone https://github.com/org/repo.git && pip install pkg@https://x.org/p.whl"),
        ("ssh remote", "git remote add origin git@github.com:org/repo.git"),
        ("email", "Contact dev@example.com or ops+alerts@example.org"),
        ("docs on key formats", "AWS access key ids start with AKIA and GitHub tokens with ghp_."),
        ("aws arn", "arn:aws:iam::123456789012:role/deploy"),
        ("timestamps and numbers", "2024-05-01T10:00:00Z 1714557600 3.14159 0xdeadbeef"),
        ("k8s secret ref", "valueFrom:\n  secretKeyRef:\n    name: db\n    key: password"),
        ("python code", "def check(token: str) -> bool:\n    return hmac.compare_digest(token, expected)"),
        ("stripe test key docs", "Stripe keys look like sk_live_... in production and sk_test_... in test mode."),
        ("localhost url", "postgres://localhost:5432/app and redis://cache:6379/0"),
        ("ipv4", "the server at 93.184.216.34 answered 200"),
        ("long identifiers", "TestRedactionKeepsOrdinaryCodeUnchangedWhenNothingIsSecret_ab12CD34ef56GH78"),
        ("jwt-like but invalid", "eyJnot.a.token"),
        (".env settings", "PASSWORD_MIN_LENGTH=12\nSESSION_TIMEOUT=3600\nAPI_VERSION=2024-06-01\nAUTH_ENABLED=true"),
        (".env references", "DB_PASSWORD=${DB_PASSWORD}\nAPI_KEY=$API_KEY\nSECRET_KEY_FILE=/run/secrets/django_key"),
        ("exports without secrets", "export TOKEN_TTL_SECONDS=900\nexport ACCESS_LOG=/var/log/app/access.log\n"
                                    "export GOOGLE_APPLICATION_CREDENTIALS=$HOME/.config/gcloud/sa.json"),
        ("token getter", "token = get_token()\nheaders = {'Authorization': f'Bearer {token}'}"),
        ("password from env, unspaced", 'DB_PASSWORD=os.environ["DB_PASSWORD"]'),
        ("sudo prompt", "[sudo] password for dev: \nSorry, try again.\n[sudo] password for dev:"),
        ("prose about passwords", "The password is stored in 1Password and rotated monthly; the password is "
                                  "base64-encoded before it is sent."),
        ("prose about passwords", "Your password is too short: it must be at least 12 characters. I reset the "
                                  "password to the value in the vault."),
        ("prose about passwords", "the password is AES-256-encrypted at rest and the old password was sha256-hashed"),
        ("env var docs", "Set `OPENAI_API_KEY` and `ANTHROPIC_API_KEY` in your shell; keys start with sk-ant- "
                         "and AIza."),
    ]
    for _ in range(4):
        out += [
            ("poetry.lock hash", f'files = [\n    {{file = "requests-2.32.3-py3-none-any.whl", '
                                 f'hash = "sha256:{_r(rng, 64, hexl)}"}},\n]'),
            ("Cargo.lock checksum", f'[[package]]\nname = "serde"\nversion = "1.0.210"\n'
                                    f'checksum = "{_r(rng, 64, hexl)}"'),
            ("yarn.lock integrity", f'  resolved "https://registry.yarnpkg.com/lodash/-/lodash-4.17.21.tgz#'
                                    f'{_r(rng, 40, hexl)}"\n  integrity sha512-'
                                    f'{base64.b64encode(rng.randbytes(64)).decode()}'),
            ("uuid keys", f'{{"idempotency_key": "{_uuid(rng)}", "request_id": "{_uuid(rng)}"}}'),
            ("git sha in env", f"GIT_COMMIT={_r(rng, 40, hexl)}\nexport BUILD_SHA={_r(rng, 40, hexl)}"),
            ("base64 image in code", 'const logo = "data:image/png;base64,'
                                     f'{base64.b64encode(rng.randbytes(200)).decode()}";'),
            ("base64 image in python", "ICON_PNG = base64.b64decode(\n"
                                       f'    "{base64.b64encode(rng.randbytes(120)).decode()}"\n)'),
        ]
    return out


def _uuid(rng: random.Random) -> str:
    hexl = "0123456789abcdef"
    return f"{_r(rng, 8, hexl)}-{_r(rng, 4, hexl)}-4{_r(rng, 3, hexl)}-a{_r(rng, 3, hexl)}-{_r(rng, 12, hexl)}"


def cases(seed: int = 11) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    rng = random.Random(seed)
    return positives(rng), negatives(rng)


def score(redactor: Redactor, show: bool = False) -> dict[str, float]:
    pos, neg = cases()
    missed: dict[str, int] = {}
    caught = 0
    for label, text, secret in pos:
        if secret not in redactor.text(text):
            caught += 1
        else:
            missed[label] = missed.get(label, 0) + 1
    alarms = []
    for label, text in neg:
        out = redactor.text(text)
        if out != text:
            alarms.append(label)
            if show:
                print(f"  false alarm [{label}]: {out[:160]!r}")
    if show:
        for label, count in sorted(missed.items()):
            print(f"  missed [{label}]: {count}")
    precision = caught / (caught + len(alarms)) if caught + len(alarms) else 1.0
    return {"positives": len(pos), "negatives": len(neg), "caught": caught, "false_alarms": len(alarms),
            "precision": precision, "recall": caught / len(pos), "missed": missed}  # type: ignore[dict-item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cost-mb", type=float, default=20.0, help="corpus size for the cost; 0: skip it")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--show", action="store_true", help="print each miss and false alarm")
    args = parser.parse_args()
    result = score(Redactor(), show=args.show)
    print(f"labelled set: {result['positives']} planted secrets, {result['negatives']} look-alikes")
    print(f"precision {result['precision']:.3f}  recall {result['recall']:.3f}  "
          f"({result['caught']} caught, {result['false_alarms']} false alarms)")
    print("missed by kind:", ", ".join(f"{k} {v}" for k, v in sorted(result["missed"].items())) or "none")
    if args.cost_mb <= 0:
        return
    with tempfile.TemporaryDirectory() as tmp:
        cost(Path(tmp) / "projects", args.cost_mb, args.runs)


def cost(projects: Path, mb: float, runs: int) -> None:
    """Parse a generated corpus once, then time each message's encoding without and with redaction
    (best of ``runs``), next to the time the parse took: in-process, so the load of other work on the
    machine skews both sides alike."""
    from bench.corpus import generate
    from sync_workers.batching import encode_message
    from sync_workers.sources.claude_code import ClaudeCodeSource
    from sync_workers.sources.files import ScanContext, ScanStats

    manifest = generate(projects, int(mb * 1024 * 1024))
    source = ClaudeCodeSource({"projects_dir": str(projects)})
    started = time.perf_counter()
    messages = [m for d in source.scan(list(source.discover()), ScanContext({}, lambda _: {}, ScanStats(), 1))
                for c in d.conversations for m in c.messages]
    parse = time.perf_counter() - started
    redactor = Redactor()
    timings = {}
    for label, using in (("off", None), ("on", redactor)):
        best = float("inf")
        for _ in range(runs):
            started = time.perf_counter()
            for message in messages:
                encode_message(message, using)
            best = min(best, time.perf_counter() - started)
        timings[label] = best
    size = manifest.bytes / 1024 / 1024
    extra = timings["on"] - timings["off"]
    print(f"corpus {size:.0f} MB, {len(messages)} messages: read+parse {parse:.2f} s; encode {timings['off']:.2f} s"
          f" off, {timings['on']:.2f} s on: redaction adds {extra:.2f} s ({size / extra:.1f} MB/s,"
          f" {extra / len(messages) * 1e6:.0f} us a message, +{extra / (parse + timings['off']):.0%} on parse+encode)")


if __name__ == "__main__":
    main()
