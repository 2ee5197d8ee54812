using Google.Protobuf;
using Modular.Abstractions.WireGuard;
using Modular.Control.Management;
using Modular.Server.Config;
using Modular.Server.Store;

namespace Modular.Server.Management;

/// <summary>
/// Turns a snapshot into one peer's view: itself, every other peer, and the account's settings. A peer whose login
/// expired stays in the others' maps with <c>expired</c> set, so their status shows it (Idle, "login expired") while
/// they keep it out of WireGuard.
/// </summary>
public static class NetworkMapBuilder
{
    public static NetworkMap Build(NetworkSnapshot snapshot, PeerRecord self, AccountConfig account, DateTimeOffset now)
    {
        var map = BuildHeader(snapshot, self, account);
        foreach (var (peer, remote) in snapshot.RemotePeers(account))
        {
            if (peer.Id != self.Id)
            {
                map.RemotePeers.Add(AsSeenAt(peer, remote, now));
            }
        }

        return map;
    }

    /// <summary>Everything in a peer's map except the remote peers: its config, settings, and the firewall rules and routes that concern it.</summary>
    public static NetworkMap BuildHeader(NetworkSnapshot snapshot, PeerRecord self, AccountConfig account)
    {
        var map = new NetworkMap
        {
            Serial = snapshot.Serial,
            FirewallRules = { snapshot.PolicySet.RulesFor(self, snapshot.Peers) },
            Routes = { snapshot.PolicySet.RoutesFor(self, snapshot.Peers) },
            PeerConfig = PeerConfigFor(self, account),
            Dns = Networks.DnsMapSection.Build(snapshot.NameserverGroups, account),
            Settings = new AccountSettings
            {
                LazyConnections = account.LazyConnections,
                Flows = new FlowSettings { Enabled = account.Flows.Enabled, CollectDns = account.Flows.CollectDns, CollectExitNode = account.Flows.CollectExitNode },
                Rosenpass = new RosenpassSettings { Enabled = account.Rosenpass.Enabled, Permissive = account.Rosenpass.Permissive },
            },
        };
        if (account.Psk.Length > 0)
        {
            map.AccountPsk = ByteString.CopyFrom(WgKey.Parse(account.Psk).ToArray());
        }

        return map;
    }

    public static PeerConfig PeerConfigFor(PeerRecord peer, AccountConfig account) => new()
    {
        Address = $"{peer.OverlayAddress}/{OverlayNetwork.PrefixLength}",
        DnsDomain = account.DnsDomain,
        Fqdn = Fqdn(peer, account),
        LoginExpiresUnix = peer.LoginExpiresAt?.ToUnixTimeSeconds() ?? 0,
    };

    /// <summary>
    /// <paramref name="remote"/> (the snapshot's shared entry for <paramref name="peer"/>) as others see it at
    /// <paramref name="now"/>: a copy marked expired when its login lapsed, else the shared entry itself.
    /// </summary>
    public static RemotePeer AsSeenAt(PeerRecord peer, RemotePeer remote, DateTimeOffset now)
        => peer.IsExpired(now) ? new RemotePeer(remote) { Expired = true } : remote;

    /// <summary>How a peer appears in everyone else's map; built once per snapshot and shared by all streams.</summary>
    public static RemotePeer ToRemotePeer(PeerRecord peer, AccountConfig account)
    {
        var remote = new RemotePeer
        {
            Id = peer.Id,
            Hostname = peer.Hostname,
            Fqdn = Fqdn(peer, account),
            WgPubKey = ByteString.CopyFrom(peer.PublicKey.ToArray()),
            AgentVersion = peer.AgentVersion,
            AllowedIps = { $"{peer.OverlayAddress}/32" },
            Features = { peer.Features },
        };
        if (peer.RosenpassFingerprint.Length > 0)
        {
            remote.Rosenpass = new RosenpassConfig { PubKeyFingerprint = ByteString.CopyFrom(peer.RosenpassFingerprint), Addr = peer.RosenpassAddr };
        }

        return remote;
    }

    private static string Fqdn(PeerRecord peer, AccountConfig account) => $"{peer.DnsLabel}.{account.DnsDomain}";
}
