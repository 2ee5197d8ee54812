using System.Globalization;
using System.Net;
using System.Text;
using Modular.Abstractions.WireGuard;

namespace Modular.WireGuard.Interface;

/// <summary>
/// Writes and reads the UAPI key=value form (wireguard.com/xplatform) from typed configuration,
/// for driving any device that speaks it (wireguard-go, modular-wg, WgDevice.IpcSet). The
/// text can hold private and pre-shared keys: it must never be logged.
/// </summary>
public static class WgUapiText
{
    public static string SetDevice(WgKey privateKey, int listenPort)
        => $"private_key={privateKey.ToHex()}\nlisten_port={listenPort.ToString(CultureInfo.InvariantCulture)}\n";

    public static string SetFwmark(uint mark) => $"fwmark={mark.ToString(CultureInfo.InvariantCulture)}\n";

    /// <summary>Adds or fully replaces one peer (its allowed IPs replaced, a missing PSK cleared).</summary>
    public static string SetPeer(WgPeerConfig peer)
    {
        var text = new StringBuilder();
        text.Append("public_key=").Append(peer.PublicKey.ToHex()).Append('\n');
        text.Append("preshared_key=").Append((peer.PresharedKey ?? default).ToHex()).Append('\n');
        if (peer.Endpoint is not null)
        {
            text.Append("endpoint=").Append(FormatEndpoint(peer.Endpoint)).Append('\n');
        }

        var keepalive = (int)(peer.PersistentKeepalive ?? TimeSpan.Zero).TotalSeconds;
        text.Append("persistent_keepalive_interval=").Append(keepalive.ToString(CultureInfo.InvariantCulture)).Append('\n');
        text.Append("replace_allowed_ips=true\n");
        foreach (var prefix in peer.AllowedIps)
        {
            text.Append("allowed_ip=").Append(prefix.ToString()).Append('\n');
        }

        return text.ToString();
    }

    public static string RemovePeer(WgKey publicKey) => $"public_key={publicKey.ToHex()}\nremove=true\n";

    public static string UpdateEndpoint(WgKey publicKey, IPEndPoint endpoint)
        => $"public_key={publicKey.ToHex()}\nupdate_only=true\nendpoint={FormatEndpoint(endpoint)}\n";

    /// <summary>host:port, with IPv6 in brackets, as the UAPI expects.</summary>
    public static string FormatEndpoint(IPEndPoint endpoint)
    {
        var address = endpoint.Address.IsIPv4MappedToIPv6 ? endpoint.Address.MapToIPv4() : endpoint.Address;
        return address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6
            ? $"[{address}]:{endpoint.Port.ToString(CultureInfo.InvariantCulture)}"
            : $"{address}:{endpoint.Port.ToString(CultureInfo.InvariantCulture)}";
    }

    /// <summary>Per-peer counters from a "get" body; unknown keys are ignored, malformed values skipped.</summary>
    public static IReadOnlyDictionary<WgKey, WgPeerStats> ParseStats(string getBody)
    {
        var stats = new Dictionary<WgKey, WgPeerStats>();
        WgKey? current = null;
        long seconds = 0, nanoseconds = 0, rx = 0, tx = 0;
        IPEndPoint? endpoint = null;

        void Flush()
        {
            if (current is { } key)
            {
                DateTimeOffset? handshake = seconds == 0 && nanoseconds == 0
                    ? null
                    : DateTimeOffset.FromUnixTimeSeconds(seconds).AddTicks(nanoseconds / 100);
                stats[key] = new WgPeerStats(handshake, rx, tx, endpoint);
            }

            seconds = nanoseconds = rx = tx = 0;
            endpoint = null;
        }

        foreach (var line in getBody.Split('\n', StringSplitOptions.RemoveEmptyEntries))
        {
            var equals = line.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
            {
                continue;
            }

            var key = line[..equals];
            var value = line[(equals + 1)..];
            switch (key)
            {
                case "public_key":
                    Flush();
                    current = value.Length == 64 && IsHex(value) ? WgKey.FromHex(value) : null;
                    break;
                case "last_handshake_time_sec":
                    _ = long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out seconds);
                    break;
                case "last_handshake_time_nsec":
                    _ = long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out nanoseconds);
                    break;
                case "rx_bytes":
                    _ = long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out rx);
                    break;
                case "tx_bytes":
                    _ = long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out tx);
                    break;
                case "endpoint":
                    endpoint = IPEndPoint.TryParse(value, out var parsed) ? parsed : null;
                    break;
            }
        }

        Flush();
        return stats;
    }

    private static readonly System.Buffers.SearchValues<char> HexDigits = System.Buffers.SearchValues.Create("0123456789abcdefABCDEF");

    private static bool IsHex(string value) => value.AsSpan().IndexOfAnyExcept(HexDigits) < 0;
}
