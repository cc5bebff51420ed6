/* kern/kdebug.c - symbolize a code address from the kernel's own .stab/.stabstr.
 *
 * The linker script keeps .stab and .stabstr as loaded sections between __STAB_BEGIN__ /
 * __STAB_END__ and __STABSTR_BEGIN__ / __STABSTR_END__. Three binary searches narrow the
 * stab array: the source file (N_SO), the function in it (N_FUN) and the line (N_SLINE,
 * whose n_value is relative to the function's start). The file name is the nearest N_SOL or
 * non-empty N_SO before the line stab; the argument count is the number of N_PSYM stabs in
 * the function's declaration block (before its first line stab).
 *
 * kdiag reimplements exactly this search (kdiag/symbols/stabs.py, StabTable.debuginfo_eip)
 * so `kd bt --format jos` prints what mon_backtrace prints; keep the two in step.
 */
#include <inc/stab.h>
#include <inc/string.h>
#include <inc/types.h>
#include <kern/kdebug.h>

extern const struct Stab __STAB_BEGIN__[];
extern const struct Stab __STAB_END__[];
extern const char __STABSTR_BEGIN__[];
extern const char __STABSTR_END__[];

/*
 * stab_binsearch(stabs, region_left, region_right, type, addr)
 *
 * Within [*region_left, *region_right], find the stab of the given type whose n_value is the
 * greatest one <= addr (stabs of each type are sorted by n_value within a region). On return
 * *region_left is that stab and *region_right the last index before the next stab of that
 * type with a larger value; if there is none, *region_right = *region_left - 1.
 */
static void
stab_binsearch(const struct Stab *stabs, int *region_left, int *region_right,
	       int type, uintptr_t addr)
{
	int lo = *region_left, hi = *region_right, found = 0;

	while (lo <= hi) {
		int mid = (lo + hi) / 2, m = mid;

		/* the nearest stab of this type at or before mid */
		while (m >= lo && stabs[m].n_type != type)
			m--;
		if (m < lo) {
			lo = mid + 1;
			continue;
		}
		found = 1;
		if (stabs[m].n_value < addr) {
			*region_left = m;
			lo = mid + 1;
		} else if (stabs[m].n_value > addr) {
			*region_right = m - 1;
			hi = m - 1;
		} else {
			/* exact: keep looking right for the last equal one */
			*region_left = m;
			lo = m;
			addr++;
		}
	}

	if (!found) {
		*region_right = *region_left - 1;
	} else {
		int k;

		for (k = *region_right; k > *region_left && stabs[k].n_type != type; k--)
			;
		*region_left = k;
	}
}

int
debuginfo_eip(uintptr_t addr, struct Eipdebuginfo *info)
{
	const struct Stab *stabs = __STAB_BEGIN__, *stab_end = __STAB_END__;
	const char *stabstr = __STABSTR_BEGIN__, *stabstr_end = __STABSTR_END__;
	int lfile, rfile, lfun, rfun, lline, rline, k;

	info->eip_file = "<unknown>";
	info->eip_line = 0;
	info->eip_fn_name = "<unknown>";
	info->eip_fn_namelen = 9;
	info->eip_fn_addr = addr;
	info->eip_fn_narg = 0;

	if (stab_end <= stabs || stabstr_end <= stabstr || stabstr_end[-1] != 0)
		return -1;

	/* the source file */
	lfile = 0;
	rfile = (stab_end - stabs) - 1;
	stab_binsearch(stabs, &lfile, &rfile, N_SO, addr);
	if (lfile == 0)
		return -1;

	/* the function in it */
	lfun = lfile;
	rfun = rfile;
	stab_binsearch(stabs, &lfun, &rfun, N_FUN, addr);
	if (lfun <= rfun) {
		if (stabs[lfun].n_strx < (uint32_t) (stabstr_end - stabstr))
			info->eip_fn_name = stabstr + stabs[lfun].n_strx;
		info->eip_fn_addr = stabs[lfun].n_value;
		addr -= info->eip_fn_addr;
		lline = lfun;
		rline = rfun;
	} else {
		/* no function stab: assembly. Line stabs hold absolute addresses. */
		info->eip_fn_addr = addr;
		lline = lfile;
		rline = rfile;
	}
	/* "name:F(0,1)" -> "name" */
	info->eip_fn_namelen = strfind(info->eip_fn_name, ':') - info->eip_fn_name;

	/* the line */
	stab_binsearch(stabs, &lline, &rline, N_SLINE, addr);
	if (lline > rline)
		return -1;
	info->eip_line = stabs[lline].n_desc;

	/* the file of that line: an included file (N_SOL) or the source file (N_SO) */
	k = lline;
	while (k >= lfile && stabs[k].n_type != N_SOL
	       && (stabs[k].n_type != N_SO || !stabs[k].n_value))
		k--;
	if (k >= lfile && stabs[k].n_strx < (uint32_t) (stabstr_end - stabstr))
		info->eip_file = stabstr + stabs[k].n_strx;

	/* parameters: the N_PSYM stabs before the function's first line stab */
	if (lfun < rfun)
		for (k = lfun + 1; k < rfun && stabs[k].n_type != N_SLINE
		     && stabs[k].n_type != N_FUN && stabs[k].n_type != N_SO
		     && stabs[k].n_type != N_SOL; k++)
			if (stabs[k].n_type == N_PSYM)
				info->eip_fn_narg++;

	return 0;
}
