/*
 * sandbox.h - one interface for every sandbox backend: create (fresh, eager
 * from a memory file, lazy through a page-server socket), run, wait for the
 * guest's report, pause -> {guest-memory memfd (ownership handed over), the
 * written-page set, the snapfile}, destroy. The pause pipeline, the daemon
 * and the peer code see only this interface (docs/design.md §2).
 *
 * Backends: proc (a ptrace-driven process sandbox, every Linux machine) and
 * kvm (KVM microVMs, vmm/, where /dev/kvm opens). Both track the pages the
 * guest writes with userfaultfd async write-protect + PAGEMAP_SCAN.
 */
#ifndef MS_SANDBOX_SANDBOX_H
#define MS_SANDBOX_SANDBOX_H

#include "sandbox/guest.h"
#include "sandbox/snapfile.h"
#include "util/pageset.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum ms_sandbox_memory { MS_SANDBOX_FRESH, MS_SANDBOX_EAGER, MS_SANDBOX_LAZY };

struct ms_sandbox_spec {
	enum ms_guest_kind guest; /* FRESH: the guest image to load */
	uint64_t mem_size;
	enum ms_sandbox_memory memory;
	int eager_fd;		 /* EAGER: the memory image */
	const char *lazy_socket; /* LAZY: the page server's socket */
	const void *snapfile;	 /* EAGER, LAZY: the saved state */
	size_t snapfile_len;
};

struct ms_sandbox_paused {
	int memfd; /* the guest memory; the caller owns it */
	struct ms_pageset *written;
	uint8_t *snapfile;
	size_t snapfile_len;
};

struct ms_sandbox;

struct ms_sandbox_ops {
	const char *name;
	enum ms_backend_id id;
	int (*create)(const struct ms_sandbox_spec *spec, struct ms_sandbox **out);
	int (*run)(struct ms_sandbox *sb);
	int (*wait_report)(struct ms_sandbox *sb, int64_t timeout_ns);
	/*
	 * The host's view of guest RAM (guest.h layout); writes through it are not
	 * tracked. After a lazy restore it is inaccessible (PROT_NONE) until the
	 * guest's first report: the host touching a page the page server has not
	 * installed would hide the guest's page behind a zero page. After that, touch
	 * only pages the guest has touched (the mailbox, written pages).
	 */
	uint8_t *(*ram)(struct ms_sandbox *sb);
	int (*written)(struct ms_sandbox *sb, bool reset, struct ms_pageset **out);
	int (*pause)(struct ms_sandbox *sb, struct ms_sandbox_paused *out);
	const char *(*death_cause)(struct ms_sandbox *sb);
	void (*destroy)(struct ms_sandbox *sb);
};

/* Backends embed this first. */
struct ms_sandbox {
	const struct ms_sandbox_ops *ops;
};

/*
 * Picks a backend by name: "proc", "kvm", or "auto" (kvm where /dev/kvm opens,
 * else proc). why (may be NULL) gets one line saying what was chosen and why.
 * -ENODEV for kvm where /dev/kvm does not open, -EINVAL for an unknown name.
 */
int ms_sandbox_backend_pick(const char *name, const struct ms_sandbox_ops **ops, char *why,
			    size_t why_len);

int ms_sandbox_create(const struct ms_sandbox_ops *ops, const struct ms_sandbox_spec *spec,
		      struct ms_sandbox **out);
int ms_sandbox_run(struct ms_sandbox *sb);
int ms_sandbox_wait_report(struct ms_sandbox *sb, int64_t timeout_ns);
/*
 * The same, ended early (MS_ECANCELED) once cancel_fd (an eventfd, not read)
 * is readable, within a few ms: a lazily restored guest blocked on a page
 * server whose session failed never reports. cancel_fd < 0: no cancel.
 */
int ms_sandbox_wait_report_or(struct ms_sandbox *sb, int64_t timeout_ns, int cancel_fd);
uint8_t *ms_sandbox_ram(struct ms_sandbox *sb);
/*
 * The pages the guest wrote since the last reset (4 KiB indices, exactly:
 * pages only read are not in it), plus the image the backend loaded; with
 * reset, a new epoch starts.
 */
int ms_sandbox_written(struct ms_sandbox *sb, bool reset, struct ms_pageset **out);
int ms_sandbox_pause(struct ms_sandbox *sb, struct ms_sandbox_paused *out);
const char *ms_sandbox_death_cause(struct ms_sandbox *sb);
/* "kvm" or "proc". */
const char *ms_sandbox_backend_name(struct ms_sandbox *sb);
void ms_sandbox_destroy(struct ms_sandbox *sb);
void ms_sandbox_paused_fini(struct ms_sandbox_paused *paused);
/* For backends: a pause starts with paused empty (memfd -1) ... */
void ms_sandbox_paused_init(struct ms_sandbox_paused *paused);
/*
 * ... and ends here with its error: on success paused gets a duplicate of memfd (the guest
 * memory, close-on-exec); on failure (err, or the duplicate failing) paused is emptied.
 * Returns the error.
 */
int ms_sandbox_paused_end(struct ms_sandbox_paused *paused, int memfd, int err);
/* The backends' tables. */
const struct ms_sandbox_ops *ms_sandbox_proc_ops(void);
const struct ms_sandbox_ops *ms_sandbox_kvm_ops(void);
/* Whether /dev/kvm opens for reading and writing here. */
bool ms_sandbox_kvm_available(void);

#endif
