using System.Net.Sockets;
using System.Text;

namespace Modular.WireGuard.Kernel;

/// <summary>
/// Talks the UAPI protocol to a device's unix socket (wireguard-go or modular-wg):
/// one request per connection, answers bounded in time by the caller's token.
/// </summary>
public sealed class UapiClient(string socketPath)
{
    public string SocketPath { get; } = socketPath;

    /// <summary>Returns the "get" body (without the errno line). Throws <see cref="IOException"/> on a non-zero errno.</summary>
    public async Task<string> GetAsync(CancellationToken cancellationToken)
    {
        var response = await ExchangeAsync("get=1\n\n", cancellationToken);
        var errnoAt = response.LastIndexOf("errno=", StringComparison.Ordinal);
        if (errnoAt < 0)
        {
            throw new IOException($"UAPI get on {SocketPath}: no errno in the answer");
        }

        var errno = ParseErrno(response[errnoAt..]);
        if (errno != 0)
        {
            throw new IOException($"UAPI get on {SocketPath} failed: errno {errno}");
        }

        return response[..errnoAt];
    }

    /// <summary>Applies "set" lines (each ending in \n). Throws <see cref="IOException"/> on a non-zero errno.</summary>
    public async Task SetAsync(string lines, CancellationToken cancellationToken)
    {
        var response = await ExchangeAsync("set=1\n" + lines + "\n", cancellationToken);
        var errno = ParseErrno(response);
        if (errno != 0)
        {
            // The request may hold keys: report only the errno.
            throw new IOException($"UAPI set on {SocketPath} failed: errno {errno}");
        }
    }

    private async Task<string> ExchangeAsync(string request, CancellationToken cancellationToken)
    {
        using var socket = new Socket(AddressFamily.Unix, SocketType.Stream, ProtocolType.Unspecified);
        await socket.ConnectAsync(new UnixDomainSocketEndPoint(SocketPath), cancellationToken);
        await socket.SendAsync(Encoding.UTF8.GetBytes(request), cancellationToken);
        var response = new StringBuilder();
        var buffer = new byte[8192];
        while (true)
        {
            var n = await socket.ReceiveAsync(buffer, cancellationToken);
            if (n == 0)
            {
                break;
            }

            response.Append(Encoding.UTF8.GetString(buffer, 0, n));

            // The answer ends with "errno=N\n\n"; the server keeps the connection open for more requests.
            var text = response.ToString();
            var errnoAt = text.LastIndexOf("errno=", StringComparison.Ordinal);
            if (errnoAt >= 0 && text.EndsWith("\n\n", StringComparison.Ordinal) && text.IndexOf('\n', errnoAt) == text.Length - 2)
            {
                break;
            }
        }

        return response.ToString();
    }

    private static int ParseErrno(string text)
    {
        var at = text.IndexOf("errno=", StringComparison.Ordinal);
        if (at < 0)
        {
            throw new IOException("UAPI answer without errno");
        }

        var end = text.IndexOf('\n', at);
        var digits = end < 0 ? text[(at + 6)..] : text[(at + 6)..end];
        return int.TryParse(digits, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out var errno)
            ? errno
            : throw new IOException("UAPI answer with a malformed errno");
    }
}
