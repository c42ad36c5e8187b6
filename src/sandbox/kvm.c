/*
 * kvm.c - the kvm backend: a KVM microVM (vmm/) behind the sandbox interface.
 *
 * Guest RAM is a memfd mapped twice in this process: the guest mapping is
 * KVM's memslot and is tracked (userfaultfd write-protect, async with
 * PAGEMAP_SCAN on /proc/self/pagemap or sync: memory.h; never KVM's dirty
 * log, which also marks pages only read); the host view is where the backend writes the image and
 * the mailbox, untracked (guest.h). A lazy restore registers the guest mapping MISSING|WP and hands
 * the uffd and the memfd to the page server with Firecracker's handshake; the page server installs
 * read faults write-protected, so the next pause's written set holds only real writes. As with
 * proc, the host view shows a lazily restored page only once the page server installed it: let the
 * guest report once before touching RAM.
 *
 * Not thread-safe: one thread drives a sandbox.
 */
#include "sandbox/memory.h"
#include "sandbox/sandbox.h"
#include "util/err.h"
#include "util/log.h"
#include "vmm/boot.h"
#include "vmm/state.h"
#include "vmm/vmm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* int3 (#BP: the VMM's CPL0 report stub); jmp *%r11 - the proc backend's stub too */
static const uint8_t ms_kvm_stub[] = {0xcc, 0x41, 0xff, 0xe3};

struct ms_kvm_sandbox {
	struct ms_sandbox base;
	struct ms_vmm *vmm;
	int memfd, uffd, handshake_sock;
	struct ms_wtracker wt; /* the written-page tracker (memory.h) */
	uint8_t *guest;	       /* KVM's memslot mapping: tracked */
	uint8_t *host;	       /* the host's view: untracked */
	uint64_t size;
	struct ms_pageset *host_written; /* the image the host loaded: part of the next pause */
	uint32_t guest_kind;
	bool stopped;	 /* at a report, or restored and not yet run */
	bool host_gated; /* lazy: the host view is PROT_NONE until the first report */
};

static const struct ms_sandbox_ops ms_kvm_sandbox_ops;

static struct ms_kvm_sandbox *ms_ksb(struct ms_sandbox *sb)
{
	return (struct ms_kvm_sandbox *)sb;
}

static void ms_ksb_destroy(struct ms_sandbox *sb)
{
	struct ms_kvm_sandbox *k = ms_ksb(sb);
	ms_vmm_free(k->vmm);
	/* after the vCPUs are gone (one may wait on a WP fault the reader answers), before the
	 * mapping goes */
	ms_wtracker_fini(&k->wt);
	if (k->guest)
		munmap(k->guest, k->size);
	if (k->host)
		munmap(k->host, k->size);
	if (k->uffd >= 0)
		close(k->uffd);
	if (k->handshake_sock >= 0)
		close(k->handshake_sock);
	if (k->memfd >= 0)
		close(k->memfd);
	ms_pageset_free(k->host_written);
	free(k);
}

static int ms_ksb_wait_report(struct ms_sandbox *sb, int64_t timeout_ns)
{
	struct ms_kvm_sandbox *k = ms_ksb(sb);
	uint64_t rax, rdx;
	int err = ms_vmm_wait_report(k->vmm, timeout_ns, &rax, &rdx);
	if (err)
		return err;
	if (k->host_gated) { /* the stub ran: the mailbox page is installed */
		if (mprotect(k->host, k->size, PROT_READ | PROT_WRITE))
			return -errno;
		k->host_gated = false;
	}
	/* the guest's results, into the mailbox through the untracked view */
	uint64_t *box = (uint64_t *)k->host;
	box[MS_GUEST_RESULT0 / 8] = rax;
	box[MS_GUEST_RESULT1 / 8] = rdx;
	box[MS_GUEST_REPORTS / 8]++;
	k->stopped = true;
	return 0;
}

static int ms_ksb_run(struct ms_sandbox *sb)
{
	struct ms_kvm_sandbox *k = ms_ksb(sb);
	if (*ms_vmm_death_cause(k->vmm))
		return -ECHILD;
	if (!k->stopped)
		return -EINVAL;
	k->stopped = false;
	return ms_vmm_resume(k->vmm);
}

/* Finds a snapfile section for the state loader. */
struct ms_kvm_parts {
	const struct ms_snap_part *parts;
	unsigned count;
};

static const void *ms_kvm_find(void *ctx, uint32_t type, uint32_t *length)
{
	struct ms_kvm_parts *p = ctx;
	const struct ms_snap_part *part = ms_snapfile_find(p->parts, p->count, type);
	if (!part)
		return NULL;
	*length = part->length;
	return part->data;
}

/* Collects saved sections (copies) for the snapfile. */
struct ms_kvm_saved {
	struct ms_snap_part parts[MS_SNAPFILE_MAX_SECTIONS];
	unsigned count;
};

static int ms_kvm_emit(void *ctx, uint32_t type, const void *data, uint32_t length)
{
	struct ms_kvm_saved *s = ctx;
	if (s->count + 1 >= MS_SNAPFILE_MAX_SECTIONS)
		return -E2BIG;
	void *copy = malloc(length ? length : 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, data, length);
	s->parts[s->count++] = (struct ms_snap_part){.type = type, .length = length, .data = copy};
	return 0;
}

static void ms_kvm_saved_fini(struct ms_kvm_saved *s)
{
	for (unsigned i = 0; i < s->count; i++)
		free((void *)s->parts[i].data);
	s->count = 0;
}

static int ms_ksb_written(struct ms_sandbox *sb, bool reset, struct ms_pageset **out)
{
	struct ms_kvm_sandbox *k = ms_ksb(sb);
	struct ms_pageset *set = ms_pageset_new();
	if (!set)
		return -ENOMEM;
	int err = ms_wtracker_scan(&k->wt, reset, set);
	if (err) {
		ms_pageset_free(set);
		return err;
	}
	ms_pageset_union(set, k->host_written);
	if (reset)
		ms_pageset_clear(k->host_written);
	*out = set;
	return 0;
}

static int ms_ksb_pause(struct ms_sandbox *sb, struct ms_sandbox_paused *out)
{
	struct ms_kvm_sandbox *k = ms_ksb(sb);
	ms_sandbox_paused_init(out);
	if (*ms_vmm_death_cause(k->vmm))
		return -ECHILD;
	struct ms_kvm_saved saved = {.count = 0};
	int err = ms_vmm_stop(k->vmm);
	if (!err)
		err = ms_vmm_state_save(k->vmm, ms_kvm_emit, &saved);
	if (!err)
		err = ms_kvm_emit(&saved, MS_SNAP_GUEST, &k->guest_kind, sizeof(k->guest_kind));
	if (!err)
		err = ms_snapfile_build(MS_BACKEND_KVM, k->size, saved.parts, saved.count,
					&out->snapfile, &out->snapfile_len);
	ms_kvm_saved_fini(&saved);
	k->stopped = true;
	if (!err)
		err = ms_ksb_written(sb, true, &out->written);
	return ms_sandbox_paused_end(out, k->memfd, err);
}

static int ms_ksb_memory(struct ms_kvm_sandbox *k, const struct ms_sandbox_spec *spec)
{
	k->memfd = memfd_create("memsnap-guest", MFD_CLOEXEC);
	if (k->memfd < 0 || ftruncate(k->memfd, (off_t)k->size))
		return -errno;
	int err;
	if (spec->memory == MS_SANDBOX_EAGER &&
	    (err = ms_guestmem_fill(k->memfd, spec->eager_fd, k->size)))
		return err;
	k->guest = mmap(NULL, k->size, PROT_READ | PROT_WRITE, MAP_SHARED, k->memfd, 0);
	if (k->guest == MAP_FAILED) {
		k->guest = NULL;
		return -errno;
	}
	k->host = mmap(NULL, k->size, PROT_READ | PROT_WRITE, MAP_SHARED, k->memfd, 0);
	if (k->host == MAP_FAILED) {
		k->host = NULL;
		return -errno;
	}
	bool lazy = spec->memory == MS_SANDBOX_LAZY;
	uint64_t base = (uint64_t)(uintptr_t)k->guest;
	if ((err = ms_wtracker_init(&k->wt, ms_tracker_mode(), base, k->size)))
		return err;
	if ((k->uffd = ms_guestmem_uffd(base, k->size, lazy, k->wt.mode)) < 0)
		return k->uffd;
	if (!lazy) /* every epoch starts write-protected (attach protects the range) */
		return ms_wtracker_attach(&k->wt, k->uffd, 0, false);
	/*
	 * A host access to a page the page server has not installed would put a
	 * zero page into the memfd, and the guest would later read zeros. Until
	 * the guest's first report any host access faults loudly instead.
	 */
	if (mprotect(k->host, k->size, PROT_NONE))
		return -errno;
	k->host_gated = true;
	/* sync: the page server learns whose writes it records before the handshake */
	if ((err = ms_wtracker_publish(&k->wt, k->memfd)))
		return err;
	k->handshake_sock =
	    ms_guestmem_handshake(spec->lazy_socket, base, k->size, k->uffd, k->memfd);
	if (k->handshake_sock < 0)
		return k->handshake_sock;
	/*
	 * A lazy restore's epoch starts write-protected too: the holes need PTE markers,
	 * or PAGEMAP_SCAN counts every page never touched since the restore as written
	 * (installed pages come write-protected: COPY_MODE_WP).
	 */
	return ms_wtracker_attach(&k->wt, k->uffd, 0, true);
}

static int ms_ksb_boot(struct ms_kvm_sandbox *k, const struct ms_sandbox_spec *spec)
{
	const uint8_t *code;
	size_t code_len;
	if (ms_guest_code(spec->guest, &code, &code_len) || code_len > MS_GUEST_CODE_MAX)
		return -EINVAL;
	k->guest_kind = (uint32_t)spec->guest;
	memcpy(k->host + MS_GUEST_STUB, ms_kvm_stub, sizeof(ms_kvm_stub));
	memcpy(k->host + MS_GUEST_CODE, code, code_len);
	*(uint64_t *)(k->host + MS_GUEST_PAGES) = k->size / 4096;
	ms_pageset_add_range(k->host_written, 0, (MS_GUEST_CODE + code_len + 4095) / 4096);
	int err = ms_vmm_boot(k->vmm, MS_GUEST_CODE, k->size - 64);
	if (!err)
		k->stopped = true;
	if (!err && !(err = ms_ksb_run(&k->base)))
		err = ms_ksb_wait_report(&k->base, 10LL * 1000000000);
	if (err == -ECHILD)
		ms_warn("sandbox", "kvm guest died while starting: %s", ms_vmm_death_cause(k->vmm));
	return err;
}

static int ms_ksb_restore(struct ms_kvm_sandbox *k, const struct ms_sandbox_spec *spec,
			  const struct ms_kvm_parts *parts)
{
	const struct ms_snap_part *guest =
	    ms_snapfile_find(parts->parts, parts->count, MS_SNAP_GUEST);
	if (!guest || guest->length != sizeof(k->guest_kind))
		return MS_ECORRUPT;
	memcpy(&k->guest_kind, guest->data, sizeof(k->guest_kind));
	int err = ms_vmm_state_load(k->vmm, ms_kvm_find, (void *)parts);
	if (!err)
		k->stopped = true;
	return err;
}

static int ms_ksb_create(const struct ms_sandbox_spec *spec, struct ms_sandbox **out)
{
	struct ms_snap_part parts[MS_SNAPFILE_MAX_SECTIONS];
	struct ms_kvm_parts found = {.parts = parts, .count = 0};
	int err;
	if (spec->mem_size < (64u << 10) || spec->mem_size % 4096 ||
	    spec->mem_size > MS_VMM_MAX_RAM ||
	    (spec->memory == MS_SANDBOX_EAGER && spec->eager_fd < 0) ||
	    (spec->memory == MS_SANDBOX_LAZY && !spec->lazy_socket))
		return -EINVAL;
	if (spec->memory != MS_SANDBOX_FRESH &&
	    (err = ms_snapfile_parse(spec->snapfile, spec->snapfile_len, MS_BACKEND_KVM,
				     spec->mem_size, parts, &found.count)))
		return err;
	struct ms_kvm_sandbox *k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	k->base.ops = &ms_kvm_sandbox_ops;
	k->memfd = k->uffd = k->handshake_sock = -1;
	k->size = spec->mem_size;
	if (!(k->host_written = ms_pageset_new())) {
		err = -ENOMEM;
		goto fail;
	}
	if ((err = ms_ksb_memory(k, spec)))
		goto fail;
	struct ms_vmm_config config = {.ram = k->guest, .ram_size = k->size, .vcpus = 1};
	if ((err = ms_vmm_new(&config, &k->vmm)))
		goto fail;
	err = spec->memory == MS_SANDBOX_FRESH ? ms_ksb_boot(k, spec)
					       : ms_ksb_restore(k, spec, &found);
	if (err)
		goto fail;
	*out = &k->base;
	return 0;
fail:
	ms_ksb_destroy(&k->base);
	return err;
}

static uint8_t *ms_ksb_ram(struct ms_sandbox *sb)
{
	return ms_ksb(sb)->host;
}

static const char *ms_ksb_death_cause(struct ms_sandbox *sb)
{
	return ms_vmm_death_cause(ms_ksb(sb)->vmm);
}

static const struct ms_sandbox_ops ms_kvm_sandbox_ops = {
    .name = "kvm",
    .id = MS_BACKEND_KVM,
    .create = ms_ksb_create,
    .run = ms_ksb_run,
    .wait_report = ms_ksb_wait_report,
    .ram = ms_ksb_ram,
    .written = ms_ksb_written,
    .pause = ms_ksb_pause,
    .death_cause = ms_ksb_death_cause,
    .destroy = ms_ksb_destroy,
};

const struct ms_sandbox_ops *ms_sandbox_kvm_ops(void)
{
	return &ms_kvm_sandbox_ops;
}
