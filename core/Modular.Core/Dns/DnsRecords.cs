using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using Microsoft.Extensions.Logging;
using Modular.Control.Management;

namespace Modular.Core.MeshDns;

/// <summary>A peer's addresses in the zone: its first IPv4 and first IPv6 overlay address, either may be absent.</summary>
public sealed record DnsHostAddresses(IPAddress? V4, IPAddress? V6);

/// <summary>Upstream resolvers for some domains (lowercase, no trailing dot), or for every other name when <see cref="Domains"/> is empty.</summary>
public sealed record DnsUpstreamGroup(string Name, IReadOnlyList<IPEndPoint> Servers, IReadOnlyList<string> Domains);

/// <summary>
/// Everything the resolver answers from, built from one network map and never changed afterwards: the zone's
/// names (relative to the zone, lowercase) and the nameserver groups. The resolver swaps a new instance in on
/// every map, so a query is always answered from one consistent map.
/// </summary>
public sealed class DnsRecords
{
    private readonly Dictionary<string, DnsHostAddresses> _hosts;
    private readonly Dictionary<string, DnsHostAddresses>.AlternateLookup<ReadOnlySpan<char>> _lookup;
    private readonly Dictionary<uint, byte[]> _reverse = [];

    public DnsRecords(string zone, IReadOnlyDictionary<string, DnsHostAddresses> hosts, IReadOnlyList<DnsUpstreamGroup> groups, uint serial)
    {
        Zone = zone.TrimEnd('.').ToLowerInvariant();
        ZoneWire = Zone.Length == 0 ? null : DnsMessageReader.ToWireName(Zone) ?? throw new ArgumentException($"not a DNS name: {zone}", nameof(zone));
        _hosts = new Dictionary<string, DnsHostAddresses>(StringComparer.Ordinal);
        foreach (var (name, addresses) in hosts)
        {
            var relative = name.ToLowerInvariant();
            _hosts[relative] = addresses;
            if (addresses.V4 is { } v4 && ZoneWire is not null && DnsMessageReader.ToWireName($"{relative}.{Zone}") is { } fqdn)
            {
                // Two peers never share an address; if a map said so, the first keeps the reverse name.
                _reverse.TryAdd(BinaryPrimitives.ReadUInt32BigEndian(v4.GetAddressBytes()), fqdn);
            }
        }

        _lookup = _hosts.GetAlternateLookup<ReadOnlySpan<char>>();
        Groups = groups;
        Serial = serial;
    }

    /// <summary>Nothing to answer and nowhere to forward: what the resolver holds before the first map.</summary>
    public static DnsRecords Empty { get; } = new("", new Dictionary<string, DnsHostAddresses>(), [], 0);

    /// <summary>The zone this resolver is authoritative for, lowercase without a trailing dot; empty: none.</summary>
    public string Zone { get; }

    /// <summary>The zone in lowercase wire form; null when there is no zone.</summary>
    public byte[]? ZoneWire { get; }

    public IReadOnlyList<DnsUpstreamGroup> Groups { get; }

    /// <summary>The SOA serial (the map's serial, truncated to 32 bits).</summary>
    public uint Serial { get; }

    public int HostCount => _hosts.Count;

    /// <summary>The addresses of <paramref name="relativeName"/> (lowercase, relative to the zone), or null.</summary>
    public DnsHostAddresses? Find(ReadOnlySpan<char> relativeName) => _lookup.TryGetValue(relativeName, out var found) ? found : null;

    /// <summary>
    /// The peer name (lowercase wire form) for a reverse name "d.c.b.a.in-addr.arpa" of a peer's IPv4 overlay
    /// address, or null when <paramref name="wireName"/> is not such a name.
    /// </summary>
    public byte[]? FindReverse(ReadOnlySpan<byte> wireName)
    {
        if (_reverse.Count == 0 || !TryParseReverseV4(wireName, out var address))
        {
            return null;
        }

        return _reverse.TryGetValue(address, out var fqdn) ? fqdn : null;
    }

    /// <summary>Reads "d.c.b.a.in-addr.arpa" (four decimal labels, 0-255, no leading zeros) as the address a.b.c.d.</summary>
    public static bool TryParseReverseV4(ReadOnlySpan<byte> wireName, out uint address)
    {
        address = 0;
        var position = 0;
        for (var octet = 0; octet < 4; octet++)
        {
            if (position >= wireName.Length)
            {
                return false;
            }

            var length = wireName[position];
            if (length is 0 or > 3 || position + 1 + length > wireName.Length)
            {
                return false;
            }

            var digits = wireName.Slice(position + 1, length);
            if ((length > 1 && digits[0] == (byte)'0') || !System.Buffers.Text.Utf8Parser.TryParse(digits, out byte value, out var consumed) || consumed != length)
            {
                return false;
            }

            address |= (uint)value << (8 * octet);
            position += 1 + length;
        }

        return DnsMessageReader.NamesEqual(wireName[position..], ReverseV4Suffix);
    }

    private static ReadOnlySpan<byte> ReverseV4Suffix => "\u0007in-addr\u0004arpa\u0000"u8;

    /// <summary>
    /// The group for a lowercase dotted name outside the zone: the one with the longest domain that is the
    /// name or a parent of it; else the default group (no domains); else null.
    /// </summary>
    public DnsUpstreamGroup? GroupFor(ReadOnlySpan<char> name)
    {
        DnsUpstreamGroup? best = null;
        var bestLength = -1;
        DnsUpstreamGroup? fallback = null;
        foreach (var group in Groups)
        {
            if (group.Domains.Count == 0)
            {
                fallback ??= group;
                continue;
            }

            foreach (var domain in group.Domains)
            {
                var matches = name.Length == domain.Length
                    ? name.SequenceEqual(domain)
                    : name.Length > domain.Length && name[^(domain.Length + 1)] == '.' && name.EndsWith(domain, StringComparison.Ordinal);
                if (matches && domain.Length > bestLength)
                {
                    best = group;
                    bestLength = domain.Length;
                }
            }
        }

        return best ?? fallback;
    }

    /// <summary>
    /// The records of <paramref name="map"/>: this peer (its own fqdn and address) and every remote peer (its
    /// fqdn and first allowed IP of each family), when their names are under the zone; and the nameserver
    /// groups. Entries that cannot be read are skipped and reported through <paramref name="logger"/>.
    /// </summary>
    public static DnsRecords FromMap(NetworkMap map, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(map);
        var dns = map.Dns ?? new DnsConfig();
        var zone = dns.Zone.Trim().TrimEnd('.').ToLowerInvariant();
        if (zone.Length > 0 && DnsMessageReader.ToWireName(zone) is null)
        {
            logger?.LogWarning("DNS zone {Zone} from management is not a valid name; answering no names", zone);
            zone = "";
        }

        var hosts = new Dictionary<string, DnsHostAddresses>(StringComparer.Ordinal);
        void Add(string fqdn, IEnumerable<string> addresses)
        {
            var name = fqdn.Trim().TrimEnd('.').ToLowerInvariant();
            if (zone.Length == 0 || !name.EndsWith("." + zone, StringComparison.Ordinal) || DnsMessageReader.ToWireName(name) is null)
            {
                if (name.Length > 0 && zone.Length > 0)
                {
                    logger?.LogDebug("DNS: {Name} is not a valid name under {Zone}; not answered", name, zone);
                }

                return;
            }

            IPAddress? v4 = null;
            IPAddress? v6 = null;
            foreach (var text in addresses)
            {
                var slash = text.IndexOf('/', StringComparison.Ordinal);
                if (!IPAddress.TryParse(slash >= 0 ? text.AsSpan(0, slash) : text, out var address))
                {
                    continue;
                }

                if (address.AddressFamily == AddressFamily.InterNetwork)
                {
                    v4 ??= address;
                }
                else
                {
                    v6 ??= address;
                }
            }

            if (v4 is not null || v6 is not null)
            {
                hosts[name[..^(zone.Length + 1)]] = new DnsHostAddresses(v4, v6);
            }
        }

        if (map.PeerConfig is { } self)
        {
            Add(self.Fqdn, [self.Address]);
        }

        foreach (var remote in map.RemotePeers)
        {
            Add(remote.Fqdn, remote.AllowedIps);
        }

        var groups = new List<DnsUpstreamGroup>(dns.NameserverGroups.Count);
        foreach (var group in dns.NameserverGroups)
        {
            var servers = new List<IPEndPoint>(group.Nameservers.Count);
            foreach (var text in group.Nameservers)
            {
                if (TryParseNameserver(text, out var endpoint))
                {
                    servers.Add(endpoint);
                }
                else
                {
                    logger?.LogWarning("DNS: nameserver group {Group}: skipped {Nameserver} (not ip or ip:port)", group.Name, text);
                }
            }

            var domains = group.Domains.Select(d => d.Trim().TrimEnd('.').ToLowerInvariant()).Where(d => d.Length > 0).ToList();
            if (servers.Count > 0)
            {
                groups.Add(new DnsUpstreamGroup(group.Name, servers, domains));
            }
        }

        return new DnsRecords(zone, hosts, groups, unchecked((uint)map.Serial));
    }

    /// <summary>"ip", "ip:port" or "[ipv6]:port"; port 53 when omitted.</summary>
    public static bool TryParseNameserver(string text, out IPEndPoint endpoint)
    {
        endpoint = null!;
        var trimmed = text.Trim();
        // IPEndPoint first: IPAddress would also accept "[v6]:port" and silently drop the port.
        if (IPEndPoint.TryParse(trimmed, out var parsed) && parsed.Port > 0)
        {
            endpoint = parsed;
            return true;
        }

        if (IPAddress.TryParse(trimmed, out var bare))
        {
            endpoint = new IPEndPoint(bare, 53);
            return true;
        }

        return false;
    }
}
