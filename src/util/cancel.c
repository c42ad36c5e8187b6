/* cancel.c - a thread's cancellation token (see cancel.h). */
#include "util/cancel.h"

#include <stddef.h>

static _Thread_local const atomic_bool *ms_thread_token;

const atomic_bool *ms_cancel_swap(const atomic_bool *token)
{
	const atomic_bool *old = ms_thread_token;
	ms_thread_token = token;
	return old;
}

const atomic_bool *ms_cancel_token(void)
{
	return ms_thread_token;
}

bool ms_cancel_requested(void)
{
	return ms_thread_token && atomic_load(ms_thread_token);
}
