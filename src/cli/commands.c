/* commands.c - the table of memsnap subcommands. */
#include "cli/cli.h"
#include "cli/commands.h"

#include <stddef.h>

/* One row per command, "memsnap GROUP VERB" -> ms_cli_GROUP_VERB (commands.h). */
/* clang-format off */
const struct ms_cli_command ms_cli_commands[] = {
	{"header", "inspect", "print a header's metadata, mappings and builds", ms_cli_header_inspect},
	{"header", "validate", "check a header; exit 1 with the reason if invalid", ms_cli_header_validate},
	{"pageserver", NULL, "serve a build to VMMs over Firecracker's userfaultfd handshake", ms_cli_pageserver},
	{"demo", "chain", "build a 3-layer snapshot chain in a store and verify it", ms_cli_demo_chain},
	{"demo", "resume", "pause simulated guest memory; resume it warm during dedup, then cold", ms_cli_demo_resume},
	{"demo", "sandbox", "run a guest, pause it, resume it warm during dedup and cold from the store", ms_cli_demo_sandbox},
	{"vm", "run", "start a test guest in a sandbox, pause it, save or publish the snapshot", ms_cli_vm_run},
	{"vm", "restore", "restore a snapshot eagerly or lazily; the guest checks its memory", ms_cli_vm_restore},
	{"vm", "pause", "pause a guest started with vm run --control", ms_cli_vm_pause},
	{"vm", "resume", "resume a guest paused with vm pause", ms_cli_vm_resume},
	{"vm", "snapshot", "snapshot a guest started with vm run --control (saved or published)", ms_cli_vm_snapshot},
	{"vm", "status", "backend and state of a guest started with vm run --control", ms_cli_vm_status},
	{"sandbox", "start", "memsnapd: start a sandbox (a guest, or resumed from a build)", ms_cli_sandbox_start},
	{"sandbox", "pause", "memsnapd: pause a sandbox into a new build", ms_cli_sandbox_pause},
	{"sandbox", "resume", "memsnapd: resume a paused sandbox (warm, else cold)", ms_cli_sandbox_resume},
	{"sandbox", "ls", "memsnapd: list sandboxes", ms_cli_sandbox_ls},
	{"sandbox", "rm", "memsnapd: delete a sandbox", ms_cli_sandbox_rm},
	{"build", "show", "memsnapd: a build's status, sizes, dedup figures, timings", ms_cli_build_show},
	{"build", "metadata", "memsnapd: a build's scheduling metadata", ms_cli_build_metadata},
	{"build", "import", "turn a Firecracker memory file (full or diff) into a layered build", ms_cli_build_import},
	{"build", "export", "write a build's full memory to a file (Firecracker File backend)", ms_cli_build_export},
	{"build", "ls", "memsnapd: the builds in the store and the node's cache", ms_cli_build_ls},
	{"build", "rm", "memsnapd: delete a build (refused while anything needs it)", ms_cli_build_rm},
	{"store", "gc", "remove what no build needs: leftovers of failed uploads, dead leases", ms_cli_store_gc},
	{"build", "verify", "check every object of a build and its ancestors against their checksums", ms_cli_build_verify},
	{NULL, NULL, NULL, NULL},
};
/* clang-format on */
