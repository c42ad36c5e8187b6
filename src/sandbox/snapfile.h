/*
 * snapfile.h - the VMM state of a paused sandbox: one versioned, checksummed
 * format for both backends, with a section per kind of state.
 *
 *   offset  size  field
 *   0       8     magic "MSSNAPF\0"
 *   8       4     version (1)
 *   12      4     backend (1 proc, 2 kvm)
 *   16      8     guest memory size in bytes
 *   24      4     section count (<= 64)
 *   28      4     reserved, 0
 *   32      ...   sections: {u32 type, u32 length, length bytes, zero padding to 8}
 *   end-8   8     XXH64 (seed 0) of every byte before it
 *
 * Section types: 3 guest (u32 guest kind), on both backends; proc: 1 general
 * registers (struct user_regs_struct), 2 extended state (the XSAVE area,
 * NT_X86_XSTATE); kvm: 0x10..0x25, the full vCPU, VM and device state listed in
 * vmm/state.h (per-vCPU types carry the vCPU index in bits 16..31).
 * A snapfile that is truncated, corrupt, of the other backend or for another
 * memory size is rejected (MS_ECORRUPT, MS_ECHECKSUM, MS_EBACKEND, -EINVAL).
 */
#ifndef MS_SANDBOX_SNAPFILE_H
#define MS_SANDBOX_SNAPFILE_H

#include <stddef.h>
#include <stdint.h>

#define MS_SNAPFILE_VERSION	 1
#define MS_SNAPFILE_MAX_SECTIONS 64

enum ms_backend_id { MS_BACKEND_PROC = 1, MS_BACKEND_KVM = 2 };
enum ms_snap_section { MS_SNAP_REGS = 1, MS_SNAP_XSTATE = 2, MS_SNAP_GUEST = 3 };

struct ms_snap_part {
	uint32_t type;
	uint32_t length;
	const void *data; /* borrowed: into the caller's buffer, or the parsed blob */
};

/* Builds a snapfile into a malloc'd *out. */
int ms_snapfile_build(enum ms_backend_id backend, uint64_t mem_size,
		      const struct ms_snap_part *parts, unsigned count, uint8_t **out, size_t *len);
/*
 * Checks blob (every field, the checksum) and the expected backend and memory
 * size; fills parts (up to MS_SNAPFILE_MAX_SECTIONS, pointing into blob).
 */
int ms_snapfile_parse(const void *blob, size_t len, enum ms_backend_id backend, uint64_t mem_size,
		      struct ms_snap_part parts[MS_SNAPFILE_MAX_SECTIONS], unsigned *count);
/* The first section of type, or NULL. */
const struct ms_snap_part *ms_snapfile_find(const struct ms_snap_part *parts, unsigned count,
					    uint32_t type);

#endif
