/* boot.c - the system region and the CPL3 boot state (layout in boot.h). */
#include "vmm/boot.h"
#include "vmm/vmm.h"

#include <string.h>

#define PTE_P  0x001ULL
#define PTE_RW 0x002ULL
#define PTE_US 0x004ULL
#define PTE_PS 0x080ULL

static void ms_put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

/* A 64-bit interrupt gate for vector to handler, callable from dpl. */
static void ms_vmm_gate(uint8_t *sys, uint64_t base, unsigned vector, uint64_t handler,
			unsigned dpl)
{
	(void)base;
	uint64_t attr = 0x8eULL | ((uint64_t)dpl << 5);
	uint64_t lo = (handler & 0xffff) | ((uint64_t)MS_VMM_SEL_KCODE << 16) | (attr << 40) |
		      (((handler >> 16) & 0xffff) << 48);
	ms_put64(sys + MS_VMM_SYS_IDT + vector * 16, lo);
	ms_put64(sys + MS_VMM_SYS_IDT + vector * 16 + 8, handler >> 32);
}

static void ms_vmm_sys_tables(uint8_t *sys, uint64_t base)
{
	/* GDT */
	static const uint64_t gdt[5] = {
	    0,
	    0x00af9a000000ffffULL, /* kernel code, 64-bit */
	    0x00cf92000000ffffULL, /* kernel data */
	    0x00cff2000000ffffULL, /* user data, DPL 3 */
	    0x00affa000000ffffULL, /* user code, 64-bit, DPL 3 */
	};
	memcpy(sys + MS_VMM_SYS_GDT, gdt, sizeof(gdt));
	uint64_t tss = base + MS_VMM_SYS_TSS, limit = 0x67;
	uint64_t lo = (limit & 0xffff) | ((tss & 0xffffff) << 16) | (0x89ULL << 40) |
		      (((tss >> 24) & 0xff) << 56);
	ms_put64(sys + MS_VMM_SYS_GDT + 40, lo);
	ms_put64(sys + MS_VMM_SYS_GDT + 48, tss >> 32);
	/* TSS: rsp0 at +4, I/O map base past the limit (no bitmap) */
	ms_put64(sys + MS_VMM_SYS_TSS + 4, base + MS_VMM_SYS_SIZE - 16);
	uint16_t iomap = 0x68;
	memcpy(sys + MS_VMM_SYS_TSS + 0x66, &iomap, 2);
	/* stubs and IDT gates for the 32 exception vectors, and the report gate */
	for (unsigned v = 0; v < 32; v++) {
		const uint8_t code[] = {0xb0, (uint8_t)v, 0xe6, MS_VMM_PORT_FAULT,
					0xf4, 0xeb,	  0xfd};
		memcpy(sys + MS_VMM_SYS_STUBS + v * 16, code, sizeof(code));
		if (v != MS_VMM_REPORT_VECTOR)
			ms_vmm_gate(sys, base, v, base + MS_VMM_SYS_STUBS + v * 16, 0);
	}
	const uint8_t report[] = {0xe6, MS_VMM_PORT_CONTROL, 0x48, 0xcf}; /* out; iretq */
	memcpy(sys + MS_VMM_SYS_REPORT, report, sizeof(report));
	ms_vmm_gate(sys, base, MS_VMM_REPORT_VECTOR, base + MS_VMM_SYS_REPORT, 3);
	const uint8_t syscall_stub[] = {
	    0xb0, MS_VMM_SYSCALL_MARK, 0xe6, MS_VMM_PORT_FAULT, 0xf4, 0xeb, 0xfd};
	memcpy(sys + MS_VMM_SYS_SYSCALL, syscall_stub, sizeof(syscall_stub));
}

void ms_vmm_boot_msrs(uint64_t ram_size, struct kvm_msr_entry entries[3])
{
	uint64_t base = MS_VMM_SYS_BASE(ram_size);
	entries[0] = (struct kvm_msr_entry){.index = 0xc0000081, /* STAR */
					    .data = ((uint64_t)MS_VMM_SEL_KCODE << 32) |
						    ((uint64_t)(MS_VMM_SEL_UDATA - 8) << 48)};
	entries[1] = (struct kvm_msr_entry){.index = 0xc0000082, /* LSTAR */
					    .data = base + MS_VMM_SYS_SYSCALL};
	entries[2] = (struct kvm_msr_entry){.index = 0xc0000084, .data = 0x700}; /* SFMASK */
}

void ms_vmm_sys_build(uint8_t *sys, uint64_t ram_size)
{
	uint64_t base = MS_VMM_SYS_BASE(ram_size);
	ms_vmm_sys_tables(sys, base);
	/* paging: PML4[0] -> PDPT; PDPT[g] -> PD g; PD entries: 2 MiB pages or the tail PT */
	ms_put64(sys + MS_VMM_SYS_PML4, (base + MS_VMM_SYS_PDPT) | PTE_P | PTE_RW | PTE_US);
	uint64_t end = base + MS_VMM_SYS_SIZE;
	uint64_t gibs = (end + (1ULL << 30) - 1) >> 30;
	for (uint64_t g = 0; g < gibs; g++)
		ms_put64(sys + MS_VMM_SYS_PDPT + g * 8,
			 (base + MS_VMM_SYS_PD + g * 4096) | PTE_P | PTE_RW | PTE_US);
	for (uint64_t chunk = 0; chunk < (end >> 21); chunk++) {
		uint64_t at = chunk << 21, entry = 0;
		if (at + (2ULL << 20) <= ram_size) {
			entry = at | PTE_P | PTE_RW | PTE_US | PTE_PS;
		} else if (at < ram_size) {
			for (uint64_t page = at; page < ram_size; page += 4096)
				ms_put64(sys + MS_VMM_SYS_PT + ((page - at) >> 12) * 8,
					 page | PTE_P | PTE_RW | PTE_US);
			entry = (base + MS_VMM_SYS_PT) | PTE_P | PTE_RW | PTE_US;
		} else if (at == base) {
			entry = base | PTE_P | PTE_RW | PTE_PS; /* supervisor only */
		}
		ms_put64(sys + MS_VMM_SYS_PD + chunk * 8, entry);
	}
}

static void ms_seg(struct kvm_segment *s, uint16_t selector, uint8_t type, uint8_t dpl, bool code)
{
	*s = (struct kvm_segment){.base = 0,
				  .limit = 0xffffffff,
				  .selector = selector,
				  .type = type,
				  .present = 1,
				  .dpl = dpl,
				  .db = code ? 0 : 1,
				  .s = 1,
				  .l = code ? 1 : 0,
				  .g = 1};
}

void ms_vmm_boot_state(uint64_t ram_size, uint64_t entry, uint64_t stack, struct kvm_sregs *sregs,
		       struct kvm_regs *regs)
{
	uint64_t base = MS_VMM_SYS_BASE(ram_size);
	ms_seg(&sregs->cs, MS_VMM_SEL_UCODE, 0xb, 3, true);
	ms_seg(&sregs->ss, MS_VMM_SEL_UDATA, 0x3, 3, false);
	sregs->ds = sregs->es = sregs->fs = sregs->gs = sregs->ss;
	sregs->tr = (struct kvm_segment){.base = base + MS_VMM_SYS_TSS,
					 .limit = 0x67,
					 .selector = MS_VMM_SEL_TSS,
					 .type = 0xb, /* busy 64-bit TSS */
					 .present = 1};
	sregs->gdt.base = base + MS_VMM_SYS_GDT;
	sregs->gdt.limit = 7 * 8 - 1;
	sregs->idt.base = base + MS_VMM_SYS_IDT;
	sregs->idt.limit = 256 * 16 - 1;
	sregs->cr3 = base + MS_VMM_SYS_PML4;
	sregs->cr4 = 0x20 | 0x200 | 0x400; /* PAE, OSFXSR, OSXMMEXCPT */
	sregs->cr0 = 0x80050033;	   /* PG, AM, WP, NE, ET, MP, PE */
	sregs->efer = 0x500;		   /* LME, LMA; no SCE: syscall is #UD */
	memset(regs, 0, sizeof(*regs));
	regs->rflags = 0x0002; /* IF off: no interrupts are delivered */
	regs->rip = entry;
	regs->rdi = 0;
	regs->rsp = stack;
}

int ms_vmm_vector_has_error_code(unsigned vector)
{
	return vector == 8 || (vector >= 10 && vector <= 14) || vector == 17 || vector == 21 ||
	       vector == 29 || vector == 30;
}

const char *ms_vmm_vector_name(unsigned vector)
{
	static const char *const names[32] = {
	    "#DE", "#DB",	"NMI",	     "#BP",	  "#OF",       "#BR",	    "#UD",
	    "#NM", "#DF",	"vector 9",  "#TS",	  "#NP",       "#SS",	    "#GP",
	    "#PF", "vector 15", "#MF",	     "#AC",	  "#MC",       "#XM",	    "#VE",
	    "#CP", "vector 22", "vector 23", "vector 24", "vector 25", "vector 26", "vector 27",
	    "#HV", "#VC",	"#SX",	     "vector 31"};
	return vector < 32 ? names[vector] : "vector >= 32";
}
