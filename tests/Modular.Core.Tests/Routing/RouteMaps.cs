using Google.Protobuf;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;

namespace Modular.Core.Tests.Routing;

/// <summary>Network maps for route tests: this peer (key 1) and remote peers 2, 3 and 7 at 100.64.0.x.</summary>
internal static class RouteMaps
{
    public static readonly WgKey Self = Key(1);
    public static readonly WgKey RouterA = Key(2);
    public static readonly WgKey RouterB = Key(3);

    /// <summary>A key whose first byte is <paramref name="first"/> (the rest zero).</summary>
    public static WgKey Key(byte first)
    {
        var bytes = new byte[WgKey.Size];
        bytes[0] = first;
        return new WgKey(bytes);
    }

    public static NetworkMap Map(params Route[] routes)
    {
        var map = new NetworkMap { Serial = 1 };
        foreach (var (key, ip) in new[] { (RouterA, "100.64.0.2/32"), (RouterB, "100.64.0.3/32"), (Key(7), "100.64.0.7/32") })
        {
            map.RemotePeers.Add(new RemotePeer { Hostname = $"p{key.ToArray()[0]}", WgPubKey = ByteString.CopyFrom(key.ToArray()), AllowedIps = { ip } });
        }

        map.Routes.Add(routes);
        return map;
    }

    public static Route Route(string name, string network, WgKey peer, int metric = 9999, bool masquerade = true)
        => new() { Id = name + "-id", Name = name, Network = network, PeerWgPubKey = ByteString.CopyFrom(peer.ToArray()), Metric = metric, Masquerade = masquerade };
}
