using System.Collections.Concurrent;
using Microsoft.Extensions.Logging;

namespace Modular.Testing;

/// <summary>Records log entries so tests can check what was warned about, and how often.</summary>
public sealed class ListLogger : ILogger
{
    public ConcurrentQueue<(LogLevel Level, string Message)> Entries { get; } = new();

    public IDisposable? BeginScope<TState>(TState state)
        where TState : notnull => null;

    /// <summary>Entries below this level are neither enabled nor recorded (as a configured logger filters them); everything by default.</summary>
    public LogLevel MinimumLevel { get; set; } = LogLevel.Trace;

    public bool IsEnabled(LogLevel logLevel) => logLevel != LogLevel.None && logLevel >= MinimumLevel;

    public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
    {
        if (IsEnabled(logLevel))
        {
            Entries.Enqueue((logLevel, formatter(state, exception)));
        }
    }

    public IReadOnlyList<string> Warnings => Entries.Where(e => e.Level == LogLevel.Warning).Select(e => e.Message).ToList();

    public IReadOnlyList<string> Errors => Entries.Where(e => e.Level >= LogLevel.Error).Select(e => e.Message).ToList();
}
