/*
 * handshake.h - Firecracker's userfaultfd handshake: parse and receive.
 *
 * Firecracker connects to the handler's unix stream socket and sends ONE
 * sendmsg: a JSON array of regions as the payload, with SCM_RIGHTS carrying
 * the uffd (1 fd) or the uffd and the guest-memory memfd (2 fds). It never
 * sends anything else and never closes the socket (Firecracker's documented handshake).
 *
 * Wire format (one object per region, unknown keys ignored):
 *
 *   key                   type  meaning
 *   base_host_virt_addr   u64   region start in the VMM's address space
 *   size                  u64   region length in bytes
 *   offset                u64   where the region starts in the memory image
 *   page_size             u64   bytes: 4096 or 2097152 (Firecracker >= 1.12)
 *   page_size_kib         u64   same value, also in BYTES despite its name (>= 1.7)
 *
 * Neither page-size key (Firecracker < 1.7) means 4096. When both are given
 * they must agree.
 *
 * Validation (every rule rejects the whole handshake with MS_EPROTO):
 *  1. A JSON array of 1..MS_UFFD_MAX_REGIONS objects; numbers are non-negative
 *     integers below 2^53 (cJSON parses doubles; larger values are not exact).
 *  2. Page size 4 KiB or 2 MiB, equal across regions.
 *  3. base, size and offset are page aligned, size > 0, no overflow.
 *  4. Regions do not overlap, neither in the VMM's address space nor in the
 *     memory image; offset + size <= image_size.
 */
#ifndef MS_UFFD_HANDSHAKE_H
#define MS_UFFD_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

#define MS_UFFD_MAX_REGIONS   256
#define MS_UFFD_HANDSHAKE_MAX (1u << 20) /* bytes of JSON accepted */
#define MS_UFFD_PAGE_4K	      4096ULL
#define MS_UFFD_PAGE_2M	      (2ULL << 20)

struct ms_uffd_region {
	uint64_t base;	 /* host virtual address in the VMM */
	uint64_t size;	 /* bytes */
	uint64_t offset; /* device offset of base */
};

struct ms_uffd_handshake {
	struct ms_uffd_region *regions; /* sorted by base; owned */
	size_t region_count;
	uint64_t page_size;
};

/*
 * Parses and validates text[0, len) (need not be NUL-terminated) against a
 * memory image of image_size bytes. 0 with *out filled (free with
 * ms_uffd_handshake_fini), MS_EPROTO for any invalid input, -ENOMEM.
 * On error *out is zeroed and nothing is allocated. Safe on arbitrary bytes.
 */
int ms_uffd_handshake_parse(const char *text, size_t len, uint64_t image_size,
			    struct ms_uffd_handshake *out);
void ms_uffd_handshake_fini(struct ms_uffd_handshake *hs);

/*
 * Receives the handshake message from a connected socket: JSON bytes plus
 * SCM_RIGHTS fds, reading until the bytes form a complete JSON value, the
 * peer stops sending for a short grace period, or timeout_ns passes.
 * On success *text (malloc'd, NUL-terminated, caller frees), *len and fds[0..1]
 * are set; *nfds is 1 or 2 and fds[0] is verified to be a userfaultfd and fds[1]
 * (if any) a regular file (memfd). Errors: -ETIMEDOUT, MS_EPROTO (no fd, more
 * than 2 fds, truncated control data, wrong fd kinds, peer closed early),
 * MS_ETOOBIG; on error every received fd is closed and nothing is returned.
 */
int ms_uffd_handshake_recv(int conn, int64_t timeout_ns, char **text, size_t *len, int fds[2],
			   int *nfds);

/*
 * Writes the handshake JSON Firecracker sends for count regions (count >= 1)
 * into buf[0, cap), NUL-terminated, both page-size keys set to page_size (in
 * bytes, as Firecracker does). Returns the length without the NUL, or -ENOSPC.
 * The one writer of this format: the sandboxes' VMM side, the demo client,
 * the tests and the benches use it.
 */
int ms_uffd_handshake_format(char *buf, size_t cap, const struct ms_uffd_region *regions,
			     size_t count, uint64_t page_size);

#endif
