/* cmd_vmctl.h - the control socket of `memsnap vm run --control` (cmd_vmctl.c). */
#ifndef MS_CLI_CMD_VMCTL_H
#define MS_CLI_CMD_VMCTL_H

#include "sandbox/sandbox.h"

/*
 * Serves pause/resume/status requests on a unix socket at path until a
 * snapshot request: then *paused holds the newest pause's memfd and snapfile
 * with the written pages of every pause, and *client_out the requester, who
 * gets the result through ms_vmctl_finish. The socket file is removed on return.
 */
int ms_vmctl_serve(const char *path, struct ms_sandbox *sb, enum ms_guest_kind kind,
		   struct ms_sandbox_paused *paused, int *client_out);
/* A progress line to the snapshot's requester (client < 0: nobody). */
void ms_vmctl_progress(int client, const char *line);
/* Replies "ok RESULT" (rc 0) or "error RESULT" to the snapshot's requester and closes it. */
void ms_vmctl_finish(int client, int rc, const char *result);

#endif
