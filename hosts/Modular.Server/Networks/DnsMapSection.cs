using Modular.Control.Management;
using Modular.Server.Config;

namespace Modular.Server.Networks;

/// <summary>The network map's DNS section: the mesh zone (the account domain) and the nameserver groups, the same for every peer.</summary>
public static class DnsMapSection
{
    public static DnsConfig Build(IReadOnlyList<NameserverGroupRecord> groups, AccountConfig account)
    {
        ArgumentNullException.ThrowIfNull(groups);
        ArgumentNullException.ThrowIfNull(account);
        var dns = new DnsConfig { Enabled = true, Zone = account.DnsDomain };
        foreach (var group in groups)
        {
            dns.NameserverGroups.Add(new NameserverGroup
            {
                Id = group.Id,
                Name = group.Name,
                Nameservers = { group.Nameservers },
                Domains = { group.Domains },
            });
        }

        return dns;
    }
}
