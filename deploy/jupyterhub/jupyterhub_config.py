"""JupyterHub for a GenLab class: run as root, `make hub` (or `genlab hub start`).

Reads the class from `$GENLAB_HUB_STATE/class.json` (default /srv/genlab-hub/class.json), written
by `genlab hub setup`: the instructor, the students, the exchange, the instructor's course folder,
the shared JAX cache and the Python environment with genlab that every user's server runs in.

Environment (all optional):
  GENLAB_HUB_STATE      the hub's state folder (class.json, jupyterhub.sqlite, cookie secret)
  GENLAB_HUB_IP/PORT    where the hub listens (127.0.0.1:8000); put TLS (a reverse proxy) in front
  GENLAB_HUB_API_PORT   the proxy's REST API port (8001); GENLAB_HUB_HUB_PORT the hub's (8081)
  GENLAB_HUB_AUTH       "pam" (default: the machine's accounts and passwords) or "dummy" with
                        GENLAB_HUB_PASSWORD (one shared password: tests only)
  GENLAB_FAST           passed on to user servers (1: chapters run in their quick mode)
"""

import json
import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
STATE = Path(os.environ.get("GENLAB_HUB_STATE", "/srv/genlab-hub"))
CLASS = json.loads((STATE / "class.json").read_text())
INSTRUCTORS = {CLASS["instructor"]}
STUDENTS = set(CLASS["students"])
PYTHON = CLASS["python"]

c = get_config()  # noqa: F821 (provided by JupyterHub)

# --- where the hub listens; its proxy (configurable-http-proxy from npm, see package.json) ----
ip = os.environ.get("GENLAB_HUB_IP", "127.0.0.1")
c.JupyterHub.bind_url = f"http://{ip}:{os.environ.get('GENLAB_HUB_PORT', '8000')}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = int(os.environ.get("GENLAB_HUB_HUB_PORT", "8081"))
api_port = os.environ.get("GENLAB_HUB_API_PORT", "8001")
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{api_port}"
c.ConfigurableHTTPProxy.command = [str(HERE / "node_modules" / ".bin" / "configurable-http-proxy")]
c.ConfigurableHTTPProxy.pid_file = str(STATE / "proxy.pid")
c.JupyterHub.db_url = f"sqlite:///{STATE / 'jupyterhub.sqlite'}"
c.JupyterHub.cookie_secret_file = str(STATE / "jupyterhub_cookie_secret")
c.JupyterHub.pid_file = str(STATE / "jupyterhub.pid")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every user's server
c.JupyterHub.cleanup_proxy = True

# --- who may log in -------------------------------------------------------------------------
# A university replaces this with its single sign-on: OAuthenticator (GenericOAuthenticator for
# an OIDC/SAML bridge, e.g. Keycloak or Azure AD) or LTI 1.3 from the LMS (ltiauthenticator's
# LTI13Authenticator), with allowed_users/admin_users or the LMS's roles mapped to the groups
# below; accounts then come from LocalAuthenticator.create_system_users or a containerised
# spawner.
if os.environ.get("GENLAB_HUB_AUTH", "pam") == "dummy":
    c.JupyterHub.authenticator_class = "dummy"
    c.DummyAuthenticator.password = os.environ["GENLAB_HUB_PASSWORD"]
else:
    c.JupyterHub.authenticator_class = "pam"
    c.PAMAuthenticator.open_sessions = False
c.Authenticator.allowed_users = INSTRUCTORS | STUDENTS
c.Authenticator.admin_users = set()  # the instructor grades from their own server, not as admin
# nbgrader's groups (its JupyterHubAuthPlugin and course list read them).
c.JupyterHub.load_groups = {
    f"formgrade-{CLASS['course_id']}": {"users": sorted(INSTRUCTORS)},
    f"nbgrader-{CLASS['course_id']}": {"users": sorted(STUDENTS)},
}

# --- each user's server: their own account, genlab's environment, the role's extensions -------
c.JupyterHub.spawner_class = "localprocess"  # the hub is root; servers run as the user
c.Spawner.cmd = [PYTHON, "-m", "jupyterhub.singleuser"]
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = "~"
c.Spawner.start_timeout = 180
c.Spawner.http_timeout = 180


def role_environment(spawner):
    """The user's role picks a Jupyter config folder: jupyter/student or jupyter/instructor
    (nbgrader extensions on or off, the course folder), then jupyter/common (the exchange)."""
    name = spawner.user.name
    role = "instructor" if name in INSTRUCTORS else "student"
    env = {
        "JUPYTER_CONFIG_PATH": os.pathsep.join(
            [str(HERE / "jupyter" / role), str(HERE / "jupyter" / "common")]
        ),
        "PATH": os.pathsep.join([str(Path(PYTHON).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "GENLAB_EXCHANGE": CLASS["exchange"],
        "GENLAB_COURSE_ID": CLASS["course_id"],
        # Compiled JAX programs and small trained models: warmed by the instructor (genlab hub
        # release), read-only for students (JAX then reads the cache and never writes it).
        "GENLAB_COMPILE_CACHE": str(Path(CLASS["shared_cache"]) / "jax"),
        "GENLAB_MODEL_CACHE": str(Path(CLASS["shared_cache"]) / "models"),
    }
    if role == "instructor":
        env["GENLAB_COURSE_ROOT"] = CLASS["course_root"]
        env["GENLAB_HUB_STATE"] = str(STATE)
    if os.environ.get("GENLAB_FAST"):
        env["GENLAB_FAST"] = os.environ["GENLAB_FAST"]
    spawner.environment.update(env)


c.Spawner.pre_spawn_hook = role_environment
