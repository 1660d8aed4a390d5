"""vulture's whitelist: names that look unused because a framework, not our code, uses them.

`vulture` (run by .ci/run, configured in pyproject.toml) reports code nothing refers to. What it
reports and is listed nowhere here is dead: delete it. Add a name here only when something outside
our code calls or reads it, and say what. This file is never imported.
"""

# ruff: noqa: B018, F821
# (bare names and attribute accesses are how vulture whitelists are written)

# ---- tornado: RequestHandler hooks ----------------------------------------------------------------
_.set_default_headers
_.data_received  # @stream_request_body
_.on_finish
_.write_error
_.params  # HTTP1ServerConnection reads a request connection's params (httpserver.py)
daemon_threads  # socketserver (tests/jupyterhub/test_hub_trouble.py)
_.handle  # socketserver request handler

# ---- traitlets: Application metadata, @default / @validate methods, subcommands named by string ----
description
examples
subcommands
_._default_log_level
_._default_db_url
_._default_cookie_secret_file
_._validate_base_url
_._validate_positive
_._validate_at_least_one
_._default_hub_api_url
_._default_hub_public_url
_._validate_hub_public_url
_._default_api_token
_._default_service_name
_._default_oauth_client_id
_._default_oauth_redirect_uri
_._validate_cache_max_age
_._validate_group_pattern
_._default_kubeconfig
_._default_namespace
_._default_data_mount_path
_._default_metrics_token
_._log_output_changed  # an @observe handler
MigrateCommand  # GraderService.subcommands, "grader_service.app.MigrateCommand"
TokenCommand
TokenCreateCommand
TokenListCommand
TokenRevokeCommand
client_factory  # jupyter_client's KernelManager trait (convert/kernel.py)
max_output_bytes  # a deprecated config name, set by users' config files (autograding/executor.py)
_._deprecated_output_limit  # an @observe handler
NoopProxy  # a JupyterHub proxy class, named in the hub's config (tests/jupyterhub)
_.add_route
_.delete_route
_.get_all_routes

# ---- jupyter_client / nbclient / ipykernel: overridden hooks (convert/_compat.py lists them) -------
_.launch_kernel
_.handle_comm_msg
_._async_poll_for_reply
_._check_raise_for_error
_.connection_file  # read by the kernel manager when it starts a kernel

# ---- the grader's kernel-side code: called from code strings the grader sends (convert/guard.py) --
_install
_.checkpoint
_.unstash
_.callee  # kernel_checks: the AST rewrite of protected cells calls `checker.callee(func)`
_._keep  # kernel_checks: holds the classes whose ids it compares, so no other object takes an id

# ---- SQLAlchemy: TypeDecorator and DeclarativeBase hooks; columns written for operators ----------
impl
cache_ok
_.process_bind_param
_.process_result_value
type_annotation_map
exit_reason  # grading_jobs.exit_reason: why a job ended, for whoever reads the table
_.exit_reason
created_by_id  # grading_runs.created_by_id: who started a run (an audit column)

# ---- Python and library attributes set for their side effect -------------------------------------
_.tempdir  # tempfile.tempdir: the kernel's TMPDIR (zygote.py, forked_kernel.py)
_.retries  # kubernetes.client.Configuration fields (autograding/kube/client.py)
_.connection_pool_maxsize
_.user_agent
status_drain  # holds a reference to a running task, so it is not collected (tests/kube/fake_kubelet.py)
_.status_drain

# ---- vocabularies: members named by value (database CHECK constraints, the API, gradebooks) ------
BEST
CANCELLED
ALL
CELL
TEST
LOCKED
MUTANT
CANARY_ERROR
CANARY_VALUE
DIED
KILLED
TIME_LIMIT
NOT_STARTED
TASK  # GradeKind: a gradebook cell of kind "task"
# Landlock's access rights, each named for the bit the kernel ABI gives it (convert/confine.py).
MAKE_CHAR
MAKE_DIR
REMOVE_DIR
REMOVE_FILE
MAKE_BLOCK
MAKE_FIFO
MAKE_REG
MAKE_SOCK
MAKE_SYM
REFER

# ---- pytest: hooks and fixtures (requested by name) ----------------------------------------------
pytest_configure
pytest_runtest_setup
pytest_sessionfinish
exitstatus
_.exitstatus
_record_requests
helm
kube_namespace
jp_server_config
_isolated_credentials
fixed_clock
api_schema
flatmap_case  # a schemathesis hook
_sweep  # atexit

# ---- not yet deleted: dead, but their only remaining uses are in files being rewritten -----------
# (GradingOutcome.exit_code is set in autograding/local.py and never read; assignments.
# gradebook_skeleton is written at release and never read, and dropping it needs a migration.)
_.exit_code
gradebook_skeleton
_.gradebook_skeleton
