"""Composable filters and a custom Filter."""

from trionet.aproto import Filter, Filters


class HasToken(Filter):
    def check(self, client, packet):
        return isinstance(packet.get("token"), str)


office = Filters.Ip(["10.0.0.0/8", "fd00::/8"])
rule = (office | HasToken()) & ~Filters.Fields(cmd="shutdown$")
office.add("192.168.1.0/24")
print(rule)
