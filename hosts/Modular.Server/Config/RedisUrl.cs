using System.Globalization;

namespace Modular.Server.Config;

/// <summary>
/// <c>redis_url</c>: <c>redis://[:password@]host[:port][/db]</c>, or <c>rediss://</c> for TLS. The password is a secret:
/// <see cref="ToString"/> and every log line show only host, port and database.
/// </summary>
public sealed record RedisUrl(string Host, int Port, string Password, int Database, bool Tls)
{
    public const int DefaultPort = 6379;

    /// <summary>Parses <paramref name="text"/>; false with <paramref name="error"/> saying what is wrong (never echoing a password).</summary>
    public static bool TryParse(string text, out RedisUrl? url, out string error)
    {
        url = null;
        error = "";
        if (!Uri.TryCreate(text, UriKind.Absolute, out var uri) || uri.Scheme is not ("redis" or "rediss") || uri.Host.Length == 0)
        {
            error = "expected redis://[:password@]host[:port][/db] (or rediss:// for TLS)";
            return false;
        }

        var database = 0;
        var path = uri.AbsolutePath.Trim('/');
        if (path.Length > 0 && (!int.TryParse(path, NumberStyles.None, CultureInfo.InvariantCulture, out database) || database > 15))
        {
            error = "the path must be a database number (0-15), e.g. redis://127.0.0.1:6379/0";
            return false;
        }

        var info = Uri.UnescapeDataString(uri.UserInfo);
        var colon = info.IndexOf(':', StringComparison.Ordinal);
        var password = colon >= 0 ? info[(colon + 1)..] : info;
        url = new RedisUrl(uri.Host.Trim('[', ']'), uri.IsDefaultPort || uri.Port < 0 ? DefaultPort : uri.Port, password, database, uri.Scheme == "rediss");
        return true;
    }

    /// <summary>host:port/db, without the password.</summary>
    public override string ToString() => $"{(Host.Contains(':', StringComparison.Ordinal) ? $"[{Host}]" : Host)}:{Port}/{Database}";
}
