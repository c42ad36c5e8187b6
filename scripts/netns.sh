# netns.sh - sourced by the tests and the demo: two network namespaces joined
# by a veth pair (needs root and ip(8)).
#   netns_pair NSA NSB NET TAG   NSA gets NET.1 and NSB NET.2 (a /24) on veth
#                                ends vTAGa / vTAGb; lo and both ends up.
#                                Returns 1, leaving nothing behind, when network
#                                namespaces cannot be made here.
#   netns_unpair NSA NSB         deletes both (the veth pair goes with them);
#                                idempotent
netns_pair() {
	ip netns add "$1" 2>/dev/null || return 1
	if ! ip netns add "$2" 2>/dev/null; then
		ip netns del "$1"
		return 1
	fi
	if ip link add "v${4}a" type veth peer name "v${4}b" &&
		ip link set "v${4}a" netns "$1" && ip link set "v${4}b" netns "$2" &&
		ip -n "$1" addr add "$3.1/24" dev "v${4}a" &&
		ip -n "$2" addr add "$3.2/24" dev "v${4}b" &&
		ip -n "$1" link set lo up && ip -n "$2" link set lo up &&
		ip -n "$1" link set "v${4}a" up && ip -n "$2" link set "v${4}b" up; then
		return 0
	fi
	netns_unpair "$1" "$2"
	return 1
}

netns_unpair() {
	ip netns del "$1" 2>/dev/null
	ip netns del "$2" 2>/dev/null
	return 0
}
