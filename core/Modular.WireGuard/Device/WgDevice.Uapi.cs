using System.Globalization;
using System.Net;
using Modular.Abstractions.WireGuard;
using Microsoft.Extensions.Logging;
using Modular.WireGuard.Conn;
using Modular.WireGuard.Routing;

namespace Modular.WireGuard.Device;

/// <summary>The cross-platform UAPI (wireguard.com/xplatform) configuration text.</summary>
public sealed partial class WgDevice
{
    /// <summary>errno values returned by <see cref="IpcSet"/>, as wireguard-go returns them.</summary>
    public static class Errno
    {
        public const int EIO = 5;
        public const int ENOENT = 2;
        public const int EINVAL = 22;
        public const int EPROTO = 71;
        public const int EADDRINUSE = 98;
    }

    /// <summary>Writes the body of a "get=1" answer (without the trailing errno line and blank line).</summary>
    public void IpcGet(TextWriter output)
    {
        var invariant = CultureInfo.InvariantCulture;
        lock (_stateLock)
        {
            if (!_privateKey.IsZero)
            {
                output.Write($"private_key={_privateKey.ToHex()}\n");
            }

            var port = _up ? _boundPort : _listenPort;
            if (port != 0)
            {
                output.Write(string.Create(invariant, $"listen_port={port}\n"));
            }

            if (_fwmark != 0)
            {
                output.Write(string.Create(invariant, $"fwmark={_fwmark}\n"));
            }

            foreach (var peer in _peers.Values)
            {
                byte[] psk = new byte[32];
                lock (peer.Handshake.Lock)
                {
                    peer.Handshake.PresharedKey.CopyTo(psk, 0);
                }

                output.Write($"public_key={peer.PublicKey.ToHex()}\n");
                output.Write($"preshared_key={Convert.ToHexStringLower(psk)}\n");
                Array.Clear(psk);
                output.Write("protocol_version=1\n");
                var endpoint = peer.Endpoint;
                if (!endpoint.IsEmpty)
                {
                    output.Write($"endpoint={endpoint.ToIPEndPoint()}\n");
                }

                var lastHandshake = peer.LastHandshake;
                long seconds = 0;
                long nanos = 0;
                if (lastHandshake is { } when)
                {
                    var sinceEpoch = when.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks;
                    seconds = sinceEpoch / TimeSpan.TicksPerSecond;
                    nanos = sinceEpoch % TimeSpan.TicksPerSecond * 100;
                }

                output.Write(string.Create(invariant, $"last_handshake_time_sec={seconds}\n"));
                output.Write(string.Create(invariant, $"last_handshake_time_nsec={nanos}\n"));
                output.Write(string.Create(invariant, $"tx_bytes={peer.TxBytes}\n"));
                output.Write(string.Create(invariant, $"rx_bytes={peer.RxBytes}\n"));
                output.Write(string.Create(invariant, $"persistent_keepalive_interval={(long)peer.PersistentKeepalive.TotalSeconds}\n"));
                foreach (var prefix in _allowedIps.PrefixesOf(peer))
                {
                    output.Write($"allowed_ip={prefix}\n");
                }
            }
        }
    }

    /// <summary>
    /// Applies a "set=1" body, line by line, up to a blank line or the end. Returns 0, or an errno
    /// (EINVAL for a bad value or unknown key, EPROTO for a line that is not key=value,
    /// EADDRINUSE when the port cannot be bound). Lines before an error stay applied, as in wireguard-go.
    /// </summary>
    public int IpcSet(TextReader input)
    {
        lock (_stateLock)
        {
            try
            {
                return IpcSetLocked(input);
            }
            catch (Exception ex) when (ex is System.Net.Sockets.SocketException or IOException)
            {
                _logger.LogWarning("UAPI set failed: {Reason}", ex.Message);
                return ex is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.AddressAlreadyInUse } ? Errno.EADDRINUSE : Errno.EIO;
            }
        }
    }

    private int IpcSetLocked(TextReader input)
    {
        Peer? peer = null;
        var inPeerSection = false;
        var skipPeer = false; // update_only for an absent peer, or our own key: ignore its lines
        var pendingKey = default(WgKey);
        string? line;
        while ((line = input.ReadLine()) is not null)
        {
            if (line.Length == 0)
            {
                break;
            }

            var equals = line.IndexOf('=', StringComparison.Ordinal);
            if (equals <= 0)
            {
                return Fail(Errno.EPROTO, "line is not key=value");
            }

            var key = line[..equals];
            var value = line[(equals + 1)..];
            if (key == "public_key")
            {
                if (!TryParseHexKey(value, out pendingKey))
                {
                    return Fail(Errno.EINVAL, "invalid public_key");
                }

                inPeerSection = true;
                skipPeer = false;
                peer = GetOrCreatePeerLocked(pendingKey);
                skipPeer = peer is null;
                continue;
            }

            if (!inPeerSection)
            {
                var result = SetDeviceKey(key, value);
                if (result != 0)
                {
                    return result;
                }

                continue;
            }

            if (key == "update_only")
            {
                if (value != "true")
                {
                    return Fail(Errno.EINVAL, "update_only must be true");
                }

                // The peer was created by its public_key line only if it did not exist: undo that.
                if (peer is not null && _createdInThisSet.Contains(peer))
                {
                    RemovePeerLocked(peer.PublicKey);
                    peer = null;
                    skipPeer = true;
                }

                continue;
            }

            var peerResult = SetPeerKey(peer, skipPeer, key, value);
            if (peerResult < 0)
            {
                peer = null;
                skipPeer = true; // removed
                continue;
            }

            if (peerResult != 0)
            {
                return peerResult;
            }
        }

        _createdInThisSet.Clear();
        return 0;
    }

    private readonly HashSet<Peer> _createdInThisSet = [];

    private int SetDeviceKey(string key, string value)
    {
        switch (key)
        {
            case "private_key":
                if (!TryParseHexKey(value, out var privateKey))
                {
                    return Fail(Errno.EINVAL, "invalid private_key");
                }

                SetPrivateKey(privateKey);
                return 0;
            case "listen_port":
                if (!ushort.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var port))
                {
                    return Fail(Errno.EINVAL, "invalid listen_port");
                }

                SetListenPort(port);
                return 0;
            case "fwmark":
                uint mark = 0;
                if (value.Length != 0 && !uint.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out mark))
                {
                    return Fail(Errno.EINVAL, "invalid fwmark");
                }

                SetFwmark(mark);
                return 0;
            case "replace_peers":
                if (value != "true")
                {
                    return Fail(Errno.EINVAL, "replace_peers must be true");
                }

                foreach (var existing in _peers.Keys.ToList())
                {
                    RemovePeerLocked(existing);
                }

                return 0;
            default:
                return Fail(Errno.EINVAL, "unknown device key");
        }
    }

    /// <summary>0: applied; -1: the peer was removed; else an errno.</summary>
    private int SetPeerKey(Peer? peer, bool skip, string key, string value)
    {
        switch (key)
        {
            case "remove":
                if (value != "true")
                {
                    return Fail(Errno.EINVAL, "remove must be true");
                }

                if (!skip && peer is not null)
                {
                    RemovePeerLocked(peer.PublicKey);
                }

                return -1;
            case "preshared_key":
                if (!TryParseHexKey(value, out var psk))
                {
                    return Fail(Errno.EINVAL, "invalid preshared_key");
                }

                if (!skip && peer is not null)
                {
                    SetPresharedKey(peer, psk);
                }

                return 0;
            case "endpoint":
                if (!TryParseEndpoint(value, out var endpoint))
                {
                    return Fail(Errno.EINVAL, "invalid endpoint");
                }

                if (!skip && peer is not null)
                {
                    peer.Endpoint = WgEndpoint.FromIPEndPoint(endpoint);
                }

                return 0;
            case "persistent_keepalive_interval":
                if (!ushort.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var seconds))
                {
                    return Fail(Errno.EINVAL, "invalid persistent_keepalive_interval");
                }

                if (!skip && peer is not null)
                {
                    SetPersistentKeepaliveLocked(peer, TimeSpan.FromSeconds(seconds));
                }

                return 0;
            case "replace_allowed_ips":
                if (value != "true")
                {
                    return Fail(Errno.EINVAL, "replace_allowed_ips must be true");
                }

                if (!skip && peer is not null)
                {
                    _allowedIps.RemoveAll(peer);
                }

                return 0;
            case "allowed_ip":
                if (!IPPrefix.TryParse(value, out var prefix))
                {
                    return Fail(Errno.EINVAL, "invalid allowed_ip");
                }

                if (!skip && peer is not null)
                {
                    _allowedIps.Insert(prefix, peer);
                }

                return 0;
            case "protocol_version":
                return value == "1" ? 0 : Fail(Errno.EINVAL, "unsupported protocol_version");
            default:
                return Fail(Errno.EINVAL, "unknown peer key");
        }
    }

    private int Fail(int errno, string reason)
    {
        // The value is never logged: it may be a private or pre-shared key.
        _logger.LogWarning("UAPI set rejected: {Reason} (errno {Errno})", reason, errno);
        _createdInThisSet.Clear();
        return errno;
    }

    private static bool TryParseHexKey(string value, out WgKey key)
    {
        key = default;
        if (value.Length != 64)
        {
            return false;
        }

        Span<byte> bytes = stackalloc byte[32];
        if (Convert.FromHexString(value, bytes, out _, out var written) != System.Buffers.OperationStatus.Done || written != 32)
        {
            return false;
        }

        key = new WgKey(bytes);
        bytes.Clear();
        return true;
    }

    private static bool TryParseEndpoint(string value, out IPEndPoint endpoint)
    {
        // Only literal addresses: the UAPI never resolves names (wg does that before it talks to us).
        if (IPEndPoint.TryParse(value, out var parsed) && parsed.Port != 0
            && (value.StartsWith('[') || parsed.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork))
        {
            endpoint = parsed;
            return true;
        }

        endpoint = null!;
        return false;
    }
}
